"""Reading back Automation Controller / AWX job events (issue 18).

No Controller runs here. The events are ones ansible-runner really produced on this machine for
a real playbook (drkit.engine, local run); the test wraps them in the page shape Controller
serves at /api/v2/jobs/<id>/job_events/ (documented fields: id, type, job, event, counter,
created, uuid, parent_uuid, event_data, stdout, failed, changed, host_name, play, task) and
checks that drkit's reader gives the same result as the engine did, phases included.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from drkit import engine
from drkit.controller_events import job_events, read_job
from drkit.errors import BadInput

PLAYBOOK = """\
- name: Inject
  hosts: all
  gather_facts: false
  tasks:
    - name: Fault
      ansible.builtin.command: "true"
      changed_when: true
    - name: Publish the fault time
      ansible.builtin.set_stats:
        data: {drkit_fault: {issued_at: "2026-01-01T00:00:00Z"}}
        per_host: false
- name: Smoke
  hosts: all
  gather_facts: false
  tasks:
    - name: A check that may fail
      ansible.builtin.command: "false"
      changed_when: false
      ignore_errors: true
    - name: Green
      ansible.builtin.debug: {msg: ok}
"""


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> tuple[engine.RunResult, list[dict[str, Any]], Path]:
    import sys

    root = tmp_path_factory.mktemp("controller-events")
    (root / "inv.ini").write_text(
        f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    (root / "pb.yml").write_text(PLAYBOOK)
    result = engine.run_playbook(root / "pb.yml", inventory=root / "inv.ini",
                                 content_root=root, artifacts_dir=root / "local")
    events = [json.loads(line) for line in result.events_path.read_text().splitlines()]
    return result, events, root


def _pages(events: list[dict[str, Any]], size: int = 3) -> list[dict[str, Any]]:
    """The events as Controller's job_events pages: newest first, with one event repeated
    across two pages (a page fetched while the list moved)."""
    rows = [{"id": 1000 + i, "type": "job_event", "job": 42, "event": e["event"],
             "counter": e["counter"], "created": e["created"], "uuid": e["uuid"],
             "parent_uuid": e.get("parent_uuid", ""), "event_data": e["event_data"],
             "stdout": e.get("stdout", ""), "failed": e["event"] == "runner_on_failed",
             "changed": bool((e["event_data"].get("res") or {}).get("changed")),
             "host_name": e["event_data"].get("host", ""),
             "play": e["event_data"].get("play", ""), "task": e["event_data"].get("task", "")}
            for i, e in enumerate(events)]
    rows.reverse()
    pages = [{"count": len(rows), "next": None, "previous": None, "results": rows[i:i + size]}
             for i in range(0, len(rows), size)]
    pages[-1]["results"].append(rows[0])
    return pages


def test_a_controller_jobs_events_give_the_engines_result(local_run, tmp_path):
    from drkit.drill.model import DrillListener
    from drkit.drill.phases import _PhaseTracker

    local, events, root = local_run
    assert len(events) > 8  # a real run: start, plays, tasks, stats

    class Phases(DrillListener):
        def __init__(self) -> None:
            self.seen: list[tuple[str, str]] = []
            self.clock: datetime | None = None

        def phase_started(self, name: str, at: datetime) -> None:
            self.seen.append((name, "started"))

        def phase_finished(self, result: Any) -> None:
            self.seen.append((result.name, str(result.status)))

        def clock_started(self, at: datetime) -> None:
            self.clock = at

    heard = Phases()
    tracker = _PhaseTracker([("inject-fault", 1), ("smoke", 1)], heard, "inject-fault")
    back = read_job(_pages(events), status="successful", playbook=root / "pb.yml",
                    artifacts_dir=tmp_path / "controller", listener=tracker)
    assert back.status == local.status == engine.RunStatus.SUCCESSFUL and back.ok
    assert back.tasks == local.tasks  # every task, host, status, time and message
    assert [p.name for p in back.plays] == [p.name for p in local.plays] == ["Inject", "Smoke"]
    assert [p.started_at for p in back.plays] == [p.started_at for p in local.plays]
    assert back.stats == local.stats
    assert back.facts == local.facts == {
        "drkit_fault": {"issued_at": "2026-01-01T00:00:00Z"}}
    assert [t.status for t in back.tasks] == ["changed", "ok", "failed", "ok"]
    assert back.tasks[2].ignored and back.failure is None
    # The drill's phase tracker hears the phases and the clock as during a run.
    assert heard.seen == [("inject-fault", "started"), ("inject-fault", "ok"),
                          ("smoke", "started")]
    assert heard.clock == local.plays[0].started_at
    # The events are kept as the engine keeps them: one per line, in Ansible's order.
    kept = [json.loads(x) for x in (tmp_path / "controller" / "job_events.jsonl")
            .read_text().splitlines()]
    assert [e["counter"] for e in kept] == sorted(e["counter"] for e in events)


def test_a_failed_job_and_a_page_that_is_not_one(local_run, tmp_path):
    _, events, root = local_run
    failed = read_job(_pages(events), status="failed", playbook=root / "pb.yml",
                      artifacts_dir=tmp_path / "f")
    assert not failed.ok and failed.failure is not None
    assert "ended failed without a failed task" in failed.failure.message
    with pytest.raises(BadInput, match="job status 'done'"):
        read_job(_pages(events), status="done", playbook=root / "pb.yml",
                 artifacts_dir=tmp_path / "x")
    with pytest.raises(BadInput, match="page 1: no `results` list"):
        job_events([{"detail": "Authentication credentials were not provided."}])
