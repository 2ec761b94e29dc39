"""Fixtures for the evidence tests: real keys, real stores on disk, a real minimal plan."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drkit.config import Plan, load_plan
from drkit.engine import HostStats, PlayResult, RunResult, RunStatus, TaskResult
from drkit.evidence import LocalStore, Recorder, generate_keypair
from drkit.evidence.signing import KeyPair

PLAN = """\
version: 1
name: test-platform
regions: {primary: eu-west-1, secondary: eu-central-1}
environments:
  lab: {inventory: inventory.ini, lab: true}
services:
  payments: {tier: 1, rto: 30s, rpo: 0s}
scenarios:
  region-failover:
    services: [payments]
    phases:
      - {name: preflight, playbook: pb/preflight.yml}
      - {name: inject-fault, playbook: pb/inject.yml, starts_clock: true}
      - {name: smoke, playbook: pb/smoke.yml, stops_clock: true}
evidence:
  store: ./evidence
  signing_key: keys/evidence.key
  retention: 1d
  controls: [SOC 2 A1.3, ISO 27001 A.5.30]
"""


@pytest.fixture
def plan(tmp_path: Path) -> Plan:
    (tmp_path / "pb").mkdir()
    for name in ("preflight", "inject", "smoke"):
        (tmp_path / "pb" / f"{name}.yml").write_text(f"- name: {name}\n  hosts: all\n")
    (tmp_path / "inventory.ini").write_text("localhost ansible_connection=local\n")
    (tmp_path / "drkit.yml").write_text(PLAN)
    generate_keypair(tmp_path / "keys" / "evidence.key")
    return load_plan(tmp_path / "drkit.yml")


@pytest.fixture
def keys(plan: Plan) -> KeyPair:
    from drkit.evidence.signing import fingerprint, key_id, load_private_key

    priv = plan.root / "keys" / "evidence.key"
    pub = load_private_key(priv).public_key()
    return KeyPair(priv, priv.with_suffix(".pub"), key_id(pub), fingerprint(pub))


@pytest.fixture
def store(plan: Plan) -> LocalStore:
    return LocalStore(plan.root / "evidence")


T0 = datetime(2025, 3, 1, 2, 0, 0, tzinfo=UTC)


def make_run(tmp: Path, name: str, *, ok: bool = True, stdout: str = "PLAY [x]\nok\n",
             events: list[dict] | None = None, message: str = "") -> RunResult:
    """A real engine RunResult, with real stdout and job_events.jsonl files."""
    art = tmp / f"run-{name}"
    art.mkdir(parents=True, exist_ok=True)
    (art / "stdout").write_text(stdout)
    evs = events if events is not None else [{"event": "runner_on_ok",
                                             "event_data": {"task": "ping", "host": "localhost"}}]
    (art / "job_events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evs))
    start = T0
    tasks = (
        TaskResult("play", "first task", "localhost", "ok", start, start + timedelta(seconds=1),
                   1.0),
        TaskResult("play", "second task", "localhost", "ok" if ok else "failed",
                   start + timedelta(seconds=1), start + timedelta(seconds=2.5), 1.5,
                   message=message),
    )
    return RunResult(playbook=tmp / f"{name}.yml", status=RunStatus.SUCCESSFUL if ok
                     else RunStatus.FAILED, rc=0 if ok else 2, started_at=start,
                     ended_at=start + timedelta(seconds=2.5),
                     plays=(PlayResult("play", start, start + timedelta(seconds=2.5)),),
                     tasks=tasks, stats={"localhost": HostStats(ok=2)}, artifacts_dir=art)


SUMMARY = {
    "rto": {"target_s": 30, "measured_s": 12.5},
    # The clock runs from the fault (inject-fault's start) to all smoke flows green, inside the
    # smoke phase: 12.5 s, as measured (verify checks the two agree).
    "clock": {"started_at": "2025-03-01T02:00:03Z", "stopped_at": "2025-03-01T02:00:15.500Z"},
    "rpo": {"target_s": 0, "measured_s": 0.0, "lost_payments": 0},
    "smoke": [{"flow": "authorize", "ok": True, "duration_s": 0.12},
              {"flow": "refund", "ok": True, "duration_s": 0.2}],
    "reconciliation": {"acknowledged": 120, "present": 120, "digest": "ab" * 32},
}


def seal_one(store: LocalStore, plan: Plan, tmp: Path, *, verdict: str = "pass",
             summary: dict | None = None, environment: str = "lab", smoke_s: float = 10.0,
             **kw) -> object:
    rec = Recorder.open(store, kind="drill", name="region-failover", environment=environment,
                        plan=plan, files=[plan.root / "pb", plan.root / "inventory.ini"], **kw)
    for i, phase in enumerate(("preflight", "inject-fault", "smoke")):
        t = T0 + timedelta(seconds=3 * i)
        length = smoke_s if phase == "smoke" else 2.5
        rec.add_phase(phase, status="ok", started_at=t, ended_at=t + timedelta(seconds=length),
                      counts_for_rto=phase != "preflight", playbook=f"pb/{phase}.yml",
                      run=make_run(tmp, f"{rec.id}-{phase}"))
    return rec.seal(verdict, SUMMARY if summary is None else summary)


def seal_n(store: LocalStore, plan: Plan, tmp: Path, n: int) -> list:
    return [seal_one(store, plan, tmp) for _ in range(n)]


def rewrite_open(path: Path, plan: Plan, change) -> None:
    """Change an open record the way its writer could (say, to look like a dead process's)
    and sign it again with the plan's key, as the writer does on every write."""
    from drkit.evidence.recorder import open_canonical
    from drkit.evidence.signing import FileSigner

    doc = json.loads(path.read_text())
    change(doc)
    doc["signature"] = FileSigner(plan.root / "keys" / "evidence.key").sign(open_canonical(doc))
    path.write_text(json.dumps(doc))


def dead_pid() -> int:
    import subprocess

    proc = subprocess.Popen(["sleep", "60"])
    proc.kill()
    proc.wait()
    return proc.pid
