"""Prometheus textfile metrics, read back with a small independent parser."""

from __future__ import annotations

import math
import re
import stat
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from drkit.config import Plan, load_plan
from drkit.errors import RunFailed
from drkit.metrics import write_textfile

PLAN = """\
version: 1
name: metrics-test
regions: {primary: eu-west-1, secondary: eu-central-1}
environments:
  lab: {inventory: inventory.ini, lab: true}
services:
  payments: {tier: 1, rto: 30s, rpo: 0s}
  ledger: {tier: 2, rto: 2m, rpo: 5s}
scenarios:
  region-failover:
    services: [payments, ledger]
    phases:
      - {name: preflight, playbook: pb.yml}
"""


def outcome(scenario: str = "region-failover", env: str = "lab", verdict: str = "pass",
            rto: float | None = 12.5, rpo: float | None = 0.0, lost: int | None = 0) -> dict:
    return {"id": "x", "scenario": scenario, "environment": env, "verdict": verdict,
            "dry_run": False, "started_at": "2025-03-01T02:00:00Z",
            "ended_at": "2025-03-01T02:03:20Z",
            "rto": {"target_s": 30.0, "actual_s": rto},
            "rpo": {"target_s": 0.0, "actual_s": rpo, "lost_payments": lost}}


_LINE = re.compile(r'^(\w+)\{(.*)\} (\S+)$')


def parse(text: str) -> tuple[dict[str, tuple[str, str]], dict[tuple, float]]:
    """Independent of drkit.metrics: {name: (help, type)}, {(name, labels...): value}."""
    meta: dict[str, list[str]] = {}
    samples: dict[tuple, float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, help_ = line[7:].split(" ", 1)
            meta.setdefault(name, ["", ""])[0] = help_
        elif line.startswith("# TYPE "):
            name, type_ = line[7:].split(" ", 1)
            meta.setdefault(name, ["", ""])[1] = type_
        else:
            m = _LINE.match(line)
            assert m, f"not a sample line: {line!r}"
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2)))
            key = (m.group(1), *sorted(labels.items()))
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = float(m.group(3))
    return {k: (v[0], v[1]) for k, v in meta.items()}, samples


def key(name: str, scenario: str, env: str, service: str) -> tuple:
    return (name, ("environment", env), ("scenario", scenario), ("service", service))


@pytest.fixture
def plan(tmp_path: Path) -> Plan:
    (tmp_path / "pb.yml").write_text("- hosts: all\n  tasks: []\n")
    (tmp_path / "inventory.ini").write_text("localhost\n")
    (tmp_path / "drkit.yml").write_text(PLAN)
    return load_plan(tmp_path / "drkit.yml")


def test_one_drill_per_service_with_help_and_type(tmp_path: Path, plan: Plan) -> None:
    path = tmp_path / "textfile" / "drkit.prom"
    assert write_textfile(path, outcome(), plan=plan) == path
    meta, samples = parse(path.read_text())
    ended = datetime(2025, 3, 1, 2, 3, 20, tzinfo=UTC).timestamp()
    for svc, rto_t, rpo_t in (("payments", 30, 0), ("ledger", 120, 5)):
        assert samples[key("drkit_drill_last_run_timestamp_seconds", "region-failover", "lab",
                           svc)] == ended
        assert samples[key("drkit_drill_success", "region-failover", "lab", svc)] == 1
        assert samples[key("drkit_drill_rto_seconds", "region-failover", "lab", svc)] == 12.5
        assert samples[key("drkit_drill_rpo_seconds", "region-failover", "lab", svc)] == 0
        assert samples[key("drkit_drill_rto_target_seconds", "region-failover", "lab",
                           svc)] == rto_t
        assert samples[key("drkit_drill_rpo_target_seconds", "region-failover", "lab",
                           svc)] == rpo_t
    assert len(samples) == 2 * 7
    for name in ("drkit_drill_last_run_timestamp_seconds", "drkit_drill_rto_seconds",
                 "drkit_drill_rpo_seconds", "drkit_drill_success"):
        help_, type_ = meta[name]
        assert type_ == "gauge" and help_
    # The collector runs as another user; no temp file is left where it reads.
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir() if p.suffix == ".prom"] == ["drkit.prom"]
    assert not [p for p in path.parent.iterdir() if ".tmp" in p.name]


def test_drills_share_one_file_and_replace_only_their_own(tmp_path: Path, plan: Plan) -> None:
    path = tmp_path / "drkit.prom"
    path.write_text("# HELP other_metric Somebody else's.\n# TYPE other_metric counter\n"
                    'other_metric{job="x"} 7\n')
    write_textfile(path, outcome(), plan=plan)
    write_textfile(path, outcome(env="staging", rto=20.0), plan=plan)
    write_textfile(path, outcome(scenario="db-loss", env="lab"))  # no plan: service="all"
    # The lab drill again, now failed and without a measured recovery.
    write_textfile(path, outcome(verdict="fail", rto=None, rpo=None, lost=None), plan=plan)
    meta, s = parse(path.read_text())
    assert s[("other_metric", ("job", "x"))] == 7 and meta["other_metric"][1] == "counter"
    assert s[key("drkit_drill_success", "region-failover", "lab", "payments")] == 0
    assert math.isnan(s[key("drkit_drill_rto_seconds", "region-failover", "lab", "payments")])
    assert math.isnan(s[key("drkit_drill_lost_payments", "region-failover", "lab", "ledger")])
    assert s[key("drkit_drill_rto_seconds", "region-failover", "staging", "payments")] == 20
    assert s[key("drkit_drill_rto_seconds", "db-loss", "lab", "all")] == 12.5
    assert s[key("drkit_drill_rto_target_seconds", "db-loss", "lab", "all")] == 30
    assert len(s) == 1 + 7 * (2 + 2 + 1)


def test_label_values_are_escaped(tmp_path: Path) -> None:
    path = tmp_path / "drkit.prom"
    write_textfile(path, outcome(scenario='we"ird\\name\nx'))
    write_textfile(path, outcome(scenario='we"ird\\name\nx', rto=3.0))  # merge reads it back
    text = path.read_text()
    assert 'scenario="we\\"ird\\\\name\\nx"' in text
    _, s = parse(text)
    assert len(s) == 7


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "drkit.prom"
    threads = [threading.Thread(target=write_textfile, args=(path, outcome(env=f"env{i}")))
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _, s = parse(path.read_text())
    assert {k[1][1] for k in s} == {f"env{i}" for i in range(8)}


def test_dry_runs_write_nothing_and_write_errors_are_clear(tmp_path: Path) -> None:
    path = tmp_path / "drkit.prom"
    assert write_textfile(path, {**outcome(), "dry_run": True}) is None
    assert not path.exists()
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(RunFailed, match=r"--metrics-file .*not-a-dir/drkit.prom: cannot write"):
        write_textfile(blocker / "drkit.prom", outcome())
