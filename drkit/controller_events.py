"""Automation Controller / AWX job events, read back into drkit's run result (issue 18).

When a drill's phases run as Controller job templates, drkit still computes RTO, RPO and the
evidence: from the job's events, which Controller serves at `GET /api/v2/jobs/<id>/job_events/`
as pages of `{"count", "next", "previous", "results": [...]}`. Each result is a job event with
the documented fields `id`, `type` ("job_event"), `job`, `event` (`runner_on_ok`,
`playbook_on_play_start`, `playbook_on_stats`, ...), `counter`, `created`, `uuid`,
`parent_uuid`, `event_data` (what Ansible's callback reported: play, task, host, res, start,
end, duration, and on the stats event the `set_stats` values as `artifact_data`), `stdout`,
`failed`, `changed`, `host_name`, `play`, `task`. They are the events ansible-runner emits (the
callback receiver stores them), so this module turns them back into the event stream
drkit.engine collects from a local run and returns the same `RunResult`: tasks, timings, stats,
the first failure and the set_stats values (the fault time, the smoke phase's `green_at`) that
the drill's clock and judge read.

What was run here: no Controller exists on this machine. tests/test_controller_events.py feeds
this reader events that ansible-runner really produced on this machine for a real playbook,
wrapped in the page shape above, and checks that the result equals the engine's own. Fetching
the pages (HTTP, a token) and a `PlaybookRunner` that reads a finished Controller job per phase
are not written (docs/remote-execution.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from drkit import engine
from drkit.errors import BadInput

# Controller's job status -> the runner's status names drkit uses.
_STATUS = {"successful": "successful", "failed": "failed", "error": "failed",
           "canceled": "canceled", "timeout": "timeout"}


def job_events(pages: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The events of one job from its job_events pages (any order, repeats dropped), in the
    order Ansible emitted them (`counter`), as the runner's event dicts."""
    seen: dict[str, dict[str, Any]] = {}
    for n, page in enumerate(pages):
        results = page.get("results") if isinstance(page, Mapping) else None
        if not isinstance(results, list):
            raise BadInput(f"job events page {n + 1}: no `results` list (not a "
                           "/api/v2/jobs/<id>/job_events/ page)")
        for ev in results:
            if not isinstance(ev, Mapping) or not isinstance(ev.get("counter"), int) \
                    or not isinstance(ev.get("event"), str):
                raise BadInput(f"job events page {n + 1}: an event without `counter` and "
                               "`event`")
            key = str(ev.get("uuid") or ev["counter"])
            seen[key] = {"event": ev["event"], "counter": ev["counter"],
                         "uuid": ev.get("uuid", ""), "parent_uuid": ev.get("parent_uuid", ""),
                         "created": ev.get("created"), "stdout": ev.get("stdout", ""),
                         "event_data": dict(ev.get("event_data") or {})}
    return sorted(seen.values(), key=lambda e: e["counter"])


def read_job(pages: Iterable[Mapping[str, Any]], *, status: str, playbook: Path,
             artifacts_dir: Path, listener: engine.RunListener | None = None,
             rc: int | None = None) -> engine.RunResult:
    """A finished Controller job as drkit's RunResult (what engine.run_playbook returns for a
    local run); `status` is the job's (`successful`, `failed`, `error`, `canceled`). The
    events go to `listener` as they would during a run (the drill's phase tracker), and to
    `artifacts_dir`/job_events.jsonl, redacted as the engine keeps them."""
    if status not in _STATUS:
        raise BadInput(f"job status {status!r}: expected one of {', '.join(_STATUS)}")
    events = job_events(pages)
    artifacts_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    collector = engine._Collector(listener, artifacts_dir / "job_events.jsonl")
    try:
        for ev in events:
            collector(ev)
    finally:
        collector.close()
    times = [engine._ts(e.get("created")) for e in events if e.get("created")]
    if not times:
        raise BadInput("the job has no events with a `created` time")
    plays = tuple(engine.PlayResult(name, at, collector.plays[i + 1][1]
                                    if i + 1 < len(collector.plays) else times[-1])
                  for i, (name, at) in enumerate(collector.plays))
    run_status = engine.RunStatus(_STATUS[status])
    failure = collector.failure
    if run_status == engine.RunStatus.FAILED and failure is None:
        failure = engine.Failure("", "", "", f"the job ended {status} without a failed task")
    return engine.RunResult(
        playbook=playbook, status=run_status,
        rc=rc if rc is not None else (0 if run_status == engine.RunStatus.SUCCESSFUL else 2),
        started_at=times[0], ended_at=times[-1], plays=plays, tasks=tuple(collector.tasks),
        stats=collector.stats, artifacts_dir=artifacts_dir, failure=failure,
        facts=collector.set_stats)


__all__ = ["job_events", "read_job"]
