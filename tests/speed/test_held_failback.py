"""Failback's run started ahead and held at a gate (issue 19), with the real engine: it starts
beside the recovery run, its phase starts only after the recovery run ended (where failback
started before), and after a recovery that failed nothing of it runs and nothing of it is left
in the run folder."""

from __future__ import annotations

import json
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from drkit import drill
from drkit.config import load_plan
from drkit.drill.judge import PhaseStatus

PHASES = ("preflight", "inject-fault", "smoke", "failback")


def plan_in(tmp: Path, fails: str | None = None) -> Any:
    """Tiny phases on localhost; failback leaves a mark; `fails` fails that phase; without
    `fails`, smoke waits until failback's held run polls at its gate."""
    (tmp / "inv.yml").write_text("all: {hosts: {localhost: {ansible_connection: local, "
                                 "ansible_python_interpreter: '{{ ansible_playbook_python }}'}}}\n")
    for name in (*PHASES, "rollback"):
        tasks: list[dict[str, Any]] = []
        if name == "failback":
            tasks = [{"name": "Mark", "ansible.builtin.copy": {
                "dest": str(tmp / "failback-ran"), "content": "ran", "mode": "0600"}}]
        if name == "smoke" and fails is None:
            # The recovery run ends only once failback's run waits at its gate (its shell
            # polls for the go file): started ahead, by construction rather than by timing.
            tasks = [{"name": "Wait for failback's run at its gate", "ansible.builtin.shell":
                      "timeout 120 sh -c 'until pgrep -f \"{{ drkit_run_dir }}/[f]ailback-go\" "
                      ">/dev/null; do sleep 0.1; done'", "changed_when": False}]
        if name == fails:
            tasks = [{"name": "Fail", "ansible.builtin.fail": {"msg": "failed on purpose"}}]
        (tmp / f"{name}.yml").write_text(yaml.safe_dump(
            [{"name": name, "hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    data = {
        "version": 1, "name": "t", "regions": {"primary": "eu-west-1",
                                               "secondary": "eu-central-1"},
        "environments": {"staging": {"inventory": "inv.yml"}},
        "services": {"payments": {"tier": 1, "rto": "30s", "rpo": "0s",
                                  "smoke": ["authorize"]}},
        "scenarios": {"region-failover": {
            "type": "region-failover", "services": ["payments"],
            "phases": [{"name": n, "playbook": f"{n}.yml",
                        **({"starts_clock": True} if n == "inject-fault" else {}),
                        **({"stops_clock": True} if n == "smoke" else {}),
                        **({"failback": True} if n == "failback" else {})} for n in PHASES],
            "rollback": "rollback.yml"}},
        "evidence": {"store": "./evidence"},
    }
    (tmp / "drkit.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    return load_plan(tmp / "drkit.yml")


def events(run_dir: Path, label: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run_dir / label / "job_events.jsonl").read_text()
            .splitlines()]


def at(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["created"])


def test_failback_starts_ahead_and_its_phase_only_after_the_recovery_run() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        o = drill.run_drill(plan_in(tmp), "region-failover", "staging",
                            options=drill.DrillOptions(evidence=False))
        by = {p.name: p for p in o.phases}
        assert by["failback"].status == PhaseStatus.OK, o.phases
        assert (tmp / "failback-ran").read_text() == "ran"
        assert o.artifacts_dir is not None
        rec, fb = events(o.artifacts_dir, "recovery"), events(o.artifacts_dir, "failback")
        # Started ahead: failback's ansible-playbook was running before the recovery run ended.
        assert at(fb[0]) < at(rec[-1]), (fb[0]["created"], rec[-1]["created"])
        # Held: its phase (and its mark) came only after the recovery run had ended.
        smoke_end = by["smoke"].ended_at
        assert smoke_end is not None and by["failback"].started_at is not None
        assert by["failback"].started_at >= smoke_end
        mark = next(e for e in fb if e["event"] == "runner_on_start"
                    and e["event_data"]["task"] == "Mark")
        assert at(mark) >= smoke_end
        gate = [e["event_data"]["play"] for e in fb if e["event"] == "playbook_on_play_start"]
        assert gate == ["drkit gate (the drill's go) before failback", "failback"]
        # The gate's task is not one of failback's tasks.
        assert [t.task for t in by["failback"].tasks] == ["Mark"]
        assert not (o.artifacts_dir / "failback-go").exists()


@pytest.mark.parametrize("fails", ["preflight", "smoke"])
def test_after_a_recovery_that_failed_nothing_of_failback_runs_or_remains(fails: str) -> None:
    """preflight: the held run may still be starting (cancelled); smoke: it waits at its gate
    (told stop). Either way failback never starts and leaves nothing in the run folder."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        o = drill.run_drill(plan_in(tmp, fails), "region-failover", "staging",
                            options=drill.DrillOptions(evidence=False))
        by = {p.name: p for p in o.phases}
        assert by[fails].status == PhaseStatus.FAILED
        assert by["failback"].status == PhaseStatus.SKIPPED and by["failback"].tasks == ()
        assert not (tmp / "failback-ran").exists()
        assert o.artifacts_dir is not None
        left = sorted(p.name for p in o.artifacts_dir.iterdir())
        assert not [n for n in left if n.startswith("failback")], left
        assert ("rollback" in by) == (fails == "smoke")  # the fault was injected: rolled back
        assert not [t for t in threading.enumerate() if t.name.startswith("drkit-held-")]
