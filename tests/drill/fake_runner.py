"""A fake playbook runner for the drill's seam (drkit.drill.PlaybookRunner): it plays a script
of what each phase "did" (tasks, set_stats, dying before its first play) through the same
listener hooks as drkit.engine, so the drill's decisions are tested in milliseconds. The lab
tests prove the real runner."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from drkit import engine

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


@dataclass
class Step:
    """What one phase does: its tasks ((name, status, action)), stats it publishes, whether
    ansible-playbook dies before the phase's first play, or a hook run as it starts."""

    tasks: tuple[tuple[str, str, str], ...] = (("Do it", "changed", "x"),)
    stats: dict[str, Any] = field(default_factory=dict)
    dies_before: bool = False
    on_start: Callable[[], None] | None = None


class FakeRunner:
    def __init__(self, steps: dict[str, Step] | None = None) -> None:
        self.steps = steps or {}
        self.runs: list[list[str]] = []  # the phases of each run, in order
        self.clock = T0

    def _tick(self, seconds: float = 0.5) -> datetime:
        self.clock += timedelta(seconds=seconds)
        return self.clock

    def __call__(self, playbook: Path, *, inventory: Path, content_root: Path,
                 extravars: Any = None, artifacts_dir: Path, check: bool = False,
                 listener: engine.RunListener | None = None, cancel: Any = None,
                 envvars: Any = None) -> engine.RunResult:
        plays = yaml.safe_load(playbook.read_text())
        names = [p["name"] for p in plays]
        self.runs.append(names)
        started = self.clock
        tasks: list[engine.TaskResult] = []
        facts: dict[str, Any] = {}
        failure = None
        status, rc = engine.RunStatus.SUCCESSFUL, 0
        for name in names:
            step = self.steps.get(name, Step())
            if step.dies_before:
                status, rc = engine.RunStatus.FAILED, 4
                failure = engine.Failure("", "", "", "[ERROR]: couldn't resolve module/action")
                break
            if listener:
                listener.play_started(f"{name}: play", self._tick(0.01))
            if step.on_start:
                step.on_start()
            stop = False
            for task, st, action in step.tasks:
                t0 = self.clock
                res = engine.TaskResult(f"{name}: play", task, "localhost",
                                        "ok" if check and st == "changed" else st, t0,
                                        self._tick(), 0.5, "boom" if st == "failed" else "",
                                        action=action)
                tasks.append(res)
                if listener:
                    listener.task_finished(res)
                if st == "failed":
                    status, rc, stop = engine.RunStatus.FAILED, 2, True
                    failure = engine.Failure(res.play, task, "localhost", "boom")
                    break
            if stop:
                break
            facts.update({k: v(self) if callable(v) else v for k, v in step.stats.items()})
            if cancel is not None and cancel():
                status, rc = engine.RunStatus.CANCELED, 254
                break
        artifacts_dir.mkdir(parents=True, exist_ok=True)
        return engine.RunResult(playbook, status, rc, started, self._tick(0.01), (), tuple(tasks),
                                {}, artifacts_dir, failure, facts)


def green_smoke(entry: str = "https://payments.example.com", after_s: float = 0.2,
                flows: tuple[str, ...] = ("authorize", "balance")) -> Callable[[Any], Any]:
    """set_stats of a smoke phase that saw every flow green `after_s` before its end."""

    def make(runner: FakeRunner) -> dict[str, Any]:
        at = runner.clock - timedelta(seconds=after_s)  # seen during the last task
        return {"entry": entry, "green": True, "green_at": at.isoformat(),
                "results": [{"flow": f, "status": "pass", "detail": "ok"} for f in flows]}

    return make
