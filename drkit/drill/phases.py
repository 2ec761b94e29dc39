"""Running phases: the scenario's phase playbooks as ONE ansible-runner run (a generated playbook
imports each), plays mapped back to phases by their order, a result per phase."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from drkit import engine
from drkit.config import Phase, Plan, load_yaml
from drkit.drill.judge import PhaseStatus
from drkit.drill.model import CancelToken, DrillListener, PhaseResult, PlaybookRunner
from drkit.errors import BadInput
from drkit.targets import Target


def _now() -> datetime:
    return datetime.now(UTC)


def _play_count(playbook: Path) -> int:
    """How many plays a phase playbook has, to map the combined run's plays back to phases."""
    try:
        doc = load_yaml(playbook.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise BadInput(f"{playbook}: cannot read the phase playbook: {e}") from None
    if not isinstance(doc, list) or not doc:
        raise BadInput(f"{playbook}: a phase playbook must be a non-empty list of plays")
    count = 0
    for play in doc:
        if isinstance(play, dict) and "import_playbook" in play:
            raise BadInput(f"{playbook}: phase playbooks cannot import playbooks (inline them)")
        count += 1
    return count


class _PhaseTracker(engine.RunListener):
    """Maps plays to phases by order, and tells the drill listener as phases start and end.

    With `gate` (issue 18), a gate play stands before each phase but the first: when it starts,
    the phase before it has ended, and gate(next phase) answers, through the file the gate play
    waits for, whether the next phase may start (the driver still holds its lease).

    With `hold`, a gate play stands before the first phase too; the driver answers it itself
    (HeldRun.go or stop), so the tracker only skips it."""

    def __init__(self, phases: Sequence[tuple[str, int]], listener: DrillListener,
                 clock_phase: str | None = None,
                 gate: Callable[[str, int], None] | None = None, *, hold: bool = False) -> None:
        self.bounds: list[str | None] = []  # phase of each play, by play index; None: a gate
        for i, (name, plays) in enumerate(phases):
            if (gate is not None and i > 0) or (hold and i == 0):
                self.bounds.append(None)
            self.bounds += [name] * plays
        self.gate = gate
        self.gates = -1 if hold else 0  # the held gate is gate 0: answered by the driver
        self.names = [name for name, _ in phases]
        self.listener = listener
        self.clock_phase = clock_phase
        self.play_index = -1
        self.current: str | None = None
        self.started: dict[str, datetime] = {}
        self.finished: dict[str, PhaseResult] = {}
        self.tasks: dict[str, list[engine.TaskResult]] = {name: [] for name, _ in phases}

    def play_started(self, name: str, at: datetime) -> None:
        self.play_index += 1
        if self.play_index >= len(self.bounds):
            return
        phase = self.bounds[self.play_index]
        if phase is None:
            if self.current is not None:
                self._finish(self.current, at)
                self.current = None
            self.gates += 1
            if self.gates > 0:
                assert self.gate is not None
                self.gate(self.names[self.gates], self.gates)
            return
        if phase != self.current:
            if self.current is not None:
                self._finish(self.current, at)
            self.current = phase
            self.started[phase] = at
            self.listener.phase_started(phase, at)
            if phase == self.clock_phase:
                self.listener.clock_started(at)

    def task_finished(self, result: engine.TaskResult) -> None:
        if self.current is not None:
            self.tasks[self.current].append(result)
            self.listener.task_finished(self.current, result)

    def _finish(self, phase: str, at: datetime) -> None:
        """A phase ends when the next one starts: Ansible went on, so it succeeded."""
        tasks = tuple(self.tasks[phase])
        failed = [t for t in tasks if t.status in ("failed", "unreachable") and not t.ignored]
        status, msg = (PhaseStatus.FAILED, f"{failed[0].task}: {failed[0].message}") if failed \
            else (PhaseStatus.OK, "")
        result = PhaseResult(phase, status, self.started[phase], at, tasks, msg)
        self.finished[phase] = result
        self.listener.phase_finished(result)


# The hold gate's wait: one process polling, not a shell forking sleep (issue 13).
_HOLD_WAIT = Path(__file__).with_name("hold_wait.py")


def _gate_play(phase: str, answer: Path, timeout_s: float | None) -> str:
    """A play that holds the run before `phase` until the driver answers `go` in `answer`
    (issue 18: it proves its lease first); `stop` or no answer in time fails it, and with it
    the run: the phase never starts. An assert with a pipe lookup runs in Ansible's own
    process, so a gate costs a play and no module. `timeout_s` None: no time limit, but the
    gate gives up (fails) as soon as this driver process is gone (HeldRun)."""
    path = shlex.quote(str(answer))
    if timeout_s is None:
        wait = (f"{shlex.quote(sys.executable)} -S {shlex.quote(str(_HOLD_WAIT))} {path} "
                f"{os.getpid()}")
    else:
        wait = (f"i=0; while [ ! -e {path} ] && [ $i -lt {int(timeout_s * 20)} ]; do "
                f"sleep 0.05; i=$((i+1)); done; cat {path} 2>/dev/null")
    what = "lease gate" if timeout_s is not None else "gate (the drill's go)"
    play = [{"name": f"drkit {what} before {phase}", "hosts": "localhost",
             "gather_facts": False, "tasks": [{
                 "name": f"The driver still holds its lease: {phase} may start"
                 if timeout_s is not None else f"The drill says go: {phase} may start",
                 "ansible.builtin.assert": {
                     "that": f"lookup('ansible.builtin.pipe', {json.dumps(wait)}) == 'go'",
                     "fail_msg": f"the driver lost its lease: {phase} not started"
                     if timeout_s is not None else f"the drill did not say go: {phase} not "
                     "started",
                     "quiet": True}}]}]
    return yaml.safe_dump(play, sort_keys=False, width=1000)


def _run_phases(
    plan: Plan, tgt: Target, phases: Sequence[Phase], *, label: str, run_dir: Path,
    extravars: dict[str, Any], check: bool, listener: DrillListener, cancel: CancelToken,
    clock_phase: str | None = None, runner: PlaybookRunner | None = None,
    gate: Callable[[str], bool] | None = None, gate_timeout_s: float = 60.0,
    hold: Path | None = None,
) -> tuple[list[PhaseResult], engine.RunResult]:
    """Run `phases` as one playbook run; return a result per phase, in order. The listener's
    clock_started is called when `clock_phase` starts. With `hold`, the first phase waits
    at a gate play until the driver writes go (or stop) into that file (HeldRun).

    A phase the run never reached although nothing before it failed or was cancelled did not
    run (ansible-playbook died before its first play, a playbook error, an unknown module): it
    is `error`, never skipped (issue 11)."""
    combined = run_dir / f"{label}.yml"
    counts = []
    for ph in phases:
        path = plan.resolve(ph.playbook)
        counts.append((ph.name, _play_count(path)))
    gates = run_dir / f"{label}-gates"
    combined.write_text(
        "---\n# Generated by drkit: the phases of one run, in order.\n"
        + (_gate_play(phases[0].name, hold, None) if hold is not None else "")
        + "".join((_gate_play(ph.name, gates / str(i), gate_timeout_s)
                   if gate is not None and i > 0 else "")
                  + f"- name: {ph.name}\n  ansible.builtin.import_playbook: "
                  f"{json.dumps(str(plan.resolve(ph.playbook)))}\n"
                  for i, ph in enumerate(phases)),
        encoding="utf-8",
    )
    answer = None
    if gate is not None:
        gates.mkdir(mode=0o700, exist_ok=True)

        def answer(name: str, n: int) -> None:
            ok = gate(name)
            # Written whole, then renamed: the gate play reads either nothing or the answer.
            tmp = gates / f".{n}"
            tmp.write_text("go" if ok else "stop", encoding="utf-8")
            tmp.rename(gates / str(n))

    tracker = _PhaseTracker(counts, listener, clock_phase, answer, hold=hold is not None)
    result = (runner or engine.run_playbook)(
        combined, inventory=tgt.inventory, content_root=plan.root, extravars=extravars,
        artifacts_dir=run_dir / label, check=check, listener=tracker, envvars=tgt.envvars,
        cancel=lambda: cancel.cancelled,
    )
    out: list[PhaseResult] = []
    stopped = False  # an earlier phase failed or was cancelled: later ones were not reached
    for name, _ in counts:
        if name in tracker.finished:
            done = tracker.finished[name]
            out.append(replace(done, status=PhaseStatus.CHECKED) if check and
                       done.status == PhaseStatus.OK else done)
            stopped = stopped or done.status != PhaseStatus.OK
            continue
        start = tracker.started.get(name)
        if start is None:
            if stopped or result.status == engine.RunStatus.CANCELED or cancel.cancelled:
                # never reached: an earlier phase failed, or the run was cancelled
                out.append(PhaseResult(name, PhaseStatus.SKIPPED, None, None))
            else:
                why = (result.failure.message if result.failure and result.failure.message
                       else f"ansible-playbook ended (rc {result.rc}) without starting it")
                out.append(PhaseResult(name, PhaseStatus.ERROR, None, None, (),
                                       f"did not run: {why}", reached=False))
                listener.phase_finished(out[-1])
            stopped = True
            continue
        # The last phase the run reached: it ends with the run.
        tasks = tuple(tracker.tasks[name])
        failed = [t for t in tasks if t.status in ("failed", "unreachable") and not t.ignored]
        if failed:
            status, msg = PhaseStatus.FAILED, f"{failed[0].task}: {failed[0].message}"
        elif result.status == engine.RunStatus.CANCELED:
            status, msg = PhaseStatus.CANCELED, cancel.reason or "cancelled"
        elif not result.ok:
            status, msg = PhaseStatus.ERROR, (
                f"ansible-playbook ended without a failed task (rc {result.rc}): "
                f"{result.failure.message if result.failure else 'no output'}")
        else:
            status, msg = (PhaseStatus.CHECKED if check else PhaseStatus.OK), ""
        stopped = stopped or status != PhaseStatus.OK and status != PhaseStatus.CHECKED
        out.append(PhaseResult(name, status, start, result.ended_at, tasks, msg))
        listener.phase_finished(out[-1])
    return out, result



class _Deferred(DrillListener):
    """A held run's listener: what the run tells before the driver said go waits here (it can
    only be a run that died before its gate); go passes it on, in order; stop drops it."""

    def __init__(self, inner: DrillListener) -> None:
        self.inner, self.lock = inner, threading.Lock()
        self.queue: list[tuple[str, tuple[Any, ...]]] = []
        self.open = False

    def _call(self, hook: str, *args: Any) -> None:
        with self.lock:
            if not self.open:
                self.queue.append((hook, args))
                return
            getattr(self.inner, hook)(*args)

    def release(self) -> None:
        with self.lock:
            for hook, args in self.queue:
                getattr(self.inner, hook)(*args)
            self.queue, self.open = [], True

    def phase_started(self, name: str, at: datetime) -> None:
        self._call("phase_started", name, at)

    def phase_finished(self, result: PhaseResult) -> None:
        self._call("phase_finished", result)

    def task_finished(self, phase: str, result: engine.TaskResult) -> None:
        self._call("task_finished", phase, result)

    def clock_started(self, at: datetime) -> None:
        self._call("clock_started", at)

    def note(self, message: str) -> None:
        self._call("note", message)


class _HeldCancel(CancelToken):
    """The held run's cancel: the drill's, or the driver's stop."""

    def __init__(self, drill: CancelToken) -> None:
        self.drill = drill
        super().__init__()

    @property  # type: ignore[override]
    def reason(self) -> str:
        return self.drill.reason or self._reason

    @reason.setter
    def reason(self, value: str) -> None:
        self._reason = value

    @property
    def cancelled(self) -> bool:
        return self._event.is_set() or self.drill.cancelled


class HeldRun:
    """`phases` as one run started ahead of time and held at a gate before its first phase
    (issue 19): ansible-playbook starts, loads its content and waits while the drill does
    other work, so `go()` starts the first phase within a gate's poll (0.05 s) instead of a
    whole ansible-playbook start-up later. Nothing of the phases runs before `go()`: `stop()`,
    a driver that dies or is cancelled, or a run that ends first, and they never start.

    Only for runs on this machine through drkit's engine (the gate waits on a local file and
    on the driver's pid). `close()` always: after `stop()` it waits for the run's end and
    removes what the run that never started left in the run folder, so the folder (and the
    evidence) holds what it would have held without it."""

    def __init__(self, plan: Plan, tgt: Target, phases: Sequence[Phase], *, label: str,
                 run_dir: Path, extravars: dict[str, Any], listener: DrillListener,
                 cancel: CancelToken, gate: Callable[[str], bool] | None = None,
                 gate_timeout_s: float = 60.0) -> None:
        self.label, self.run_dir = label, run_dir
        self.answer = run_dir / f"{label}-go"
        self.listener = _Deferred(listener)
        self.cancel = _HeldCancel(cancel)
        self.said: str | None = None
        self.outcome: tuple[list[PhaseResult], engine.RunResult] | None = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.outcome = _run_phases(
                    plan, tgt, phases, label=label, run_dir=run_dir, extravars=extravars,
                    check=False, listener=self.listener, cancel=self.cancel, gate=gate,
                    gate_timeout_s=gate_timeout_s, hold=self.answer)
            except BaseException as e:  # noqa: BLE001 - handed to the driver by wait()
                self.error = e

        # Not a daemon: a run must never be left behind unanswered by a driver that goes on.
        self.thread = threading.Thread(target=run, name=f"drkit-held-{label}")
        self.thread.start()

    def _say(self, word: str) -> None:
        if self.said is None:
            self.said = word
            # Written whole, then renamed: the gate play reads either nothing or the answer.
            tmp = self.answer.with_name(f".{self.answer.name}")
            tmp.write_text(word, encoding="utf-8")
            tmp.rename(self.answer)

    def go(self) -> tuple[list[PhaseResult], engine.RunResult]:
        """Let the phases start; their results once the run ended (as _run_phases')."""
        self.listener.release()
        self._say("go")
        self.thread.join()
        if self.error is not None:
            raise self.error
        assert self.outcome is not None
        return self.outcome

    def stop(self) -> None:
        """The phases must not start: the gate fails, or the run is cancelled before it."""
        if self.said is None:
            self._say("stop")
            self.cancel.cancel("not started: the drill did not say go")

    def close(self) -> None:
        """Stop unless go was said, wait for the run's end; clean after a stopped run."""
        self.stop()
        self.thread.join()
        self.answer.unlink(missing_ok=True)
        if self.said == "stop":
            shutil.rmtree(self.run_dir / self.label, ignore_errors=True)
            shutil.rmtree(self.run_dir / f"{self.label}-gates", ignore_errors=True)
            (self.run_dir / f"{self.label}.yml").unlink(missing_ok=True)
