"""One environment, one change at a time: the lock every command that changes an environment takes.

Drills (run, resume, recover), runbooks (not `--check`) and the lab's own `up` and `down` take
the same lock, per environment. Read-only commands (status, check, list, verify, show, export,
`lab status`) never take it and never wait for it; `peek` tells them who holds it.

    with envlock.hold(state_dir, "lab", "drill run region-failover", run_id=rid,
                      on_takeover=listener.note) as lease:
        ...                          # nobody else changes the environment meanwhile
        lease.to_evidence()          # who held it, and whom it took over from

The lock is an flock on `{state_dir}/locks/env-{key}.lock`: the kernel releases it when its
holder dies, however it dies (SIGKILL included), so a lock is never left stuck. The file also
names the holder (command, run id, operator, pid, host, since), so a refused command says who
it waits for, in one line, exit 2, having changed nothing. A holder that ends normally empties
the file; a non-empty file found by the next holder is the trace of one that died: the next
command takes over and says so (`Lease.took_over`, recorded in that run's evidence).

Drill commands also leave `{state_dir}/locks/env-{key}.drill`: the last drill command, when it
started and when it ended. A drill killed half way has no end: the environment is "in a drill"
until `drkit drill resume` or `drkit drill recover` ends it. The plan's `change_freeze` reads it
(`drill_mark`) to refuse runbooks during a drill and for a while after, unless forced.

A command run inside another in the same thread may pass `reenter=True` and works under the
lease already held (`drill recover` runs `lab up`); otherwise a second hold is refused.
The lock is local to the machine that runs drkit (the design's next step is a shared lease).
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drkit import files
from drkit.errors import EnvironmentProblem

LOCK_DIR = "locks"
LAB_KEY = "lab"  # every lab environment of a plan is the one lab in its state directory


class EnvironmentBusy(EnvironmentProblem):
    """Another command is changing the environment: refused, nothing changed (exit 2)."""

    exit_code = 2

    def __init__(self, message: str, holder: Holder) -> None:
        super().__init__(message)
        self.holder = holder


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) an environment's lock."""

    command: str  # e.g. "drill run region-failover", "runbook run cert-rotation", "lab up"
    environment: str
    run_id: str | None
    operator: str
    pid: int
    host: str
    since: str  # ISO 8601, UTC
    starttime: int | None = None  # /proc/PID/stat start time: a recycled pid is not the holder

    def describe(self) -> str:
        run = f" (run {self.run_id})" if self.run_id else ""
        return (f"`drkit {self.command}`{run} by {self.operator}, pid {self.pid} on "
                f"{self.host}, since {self.since}")

    @property
    def alive(self) -> bool:
        """Its process still runs (same pid, same start time), as far as this host can tell."""
        if self.host != socket.gethostname():
            return True  # another host's process: assume it runs
        return _pid_start(self.pid) is not None and (
            self.starttime is None or _pid_start(self.pid) == self.starttime)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_text(cls, text: str) -> Holder | None:
        try:
            data = json.loads(text)
            return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})
        except (ValueError, TypeError):
            return None


@dataclass(frozen=True)
class Lease:
    """A held lock: this command's holder record, and the dead holder it took over from."""

    holder: Holder
    path: Path
    took_over: Holder | None = None
    took_over_raw: str | None = None  # the file as found, when it was not a holder record

    def to_evidence(self) -> dict[str, Any]:
        took: dict[str, Any] | None = None
        if self.took_over is not None:
            took = {**self.took_over.to_json(), "why": "its process was gone (the kernel had "
                    "released its lock)"}
        elif self.took_over_raw is not None:
            took = {"raw": self.took_over_raw[:500]}
        return {"lock": str(self.path), "holder": self.holder.to_json(), "took_over": took}


@dataclass(frozen=True)
class DrillMark:
    """The last drill command on an environment: ended_at None while it runs, or if it died."""

    command: str
    run_id: str | None
    pid: int
    host: str
    started_at: str
    ended_at: str | None = None
    starttime: int | None = None

    @property
    def unfinished(self) -> bool:
        """It started and never ended, and its process is gone (killed, or a lost machine)."""
        if self.ended_at is not None:
            return False
        holder = Holder(self.command, "", self.run_id, "", self.pid, self.host, self.started_at,
                        self.starttime)
        return not holder.alive

    @property
    def running(self) -> bool:
        return self.ended_at is None and not self.unfinished


def key_for(plan: Any, env_name: str) -> str:
    """The lock's key: the environment's name, or `lab` for the plan's lab environment(s)."""
    return LAB_KEY if plan.environment(env_name).lab else env_name


def lock_path(state_dir: Path, key: str) -> Path:
    return state_dir / LOCK_DIR / f"env-{key}.lock"


def mark_path(state_dir: Path, key: str) -> Path:
    return state_dir / LOCK_DIR / f"env-{key}.drill"


# A thread's own leases, so the same thread can nest (drill recover -> lab up).
_held: dict[str, tuple[int, Lease, int]] = {}
_held_guard = threading.Lock()


@contextmanager
def hold(state_dir: Path, environment: str, command: str, *, key: str | None = None,
         run_id: str | None = None, operator: str | None = None, drill: bool = False,
         reenter: bool = False,
         on_takeover: Callable[[str], None] | None = None) -> Iterator[Lease]:
    """Hold the environment's lock for the block; raise EnvironmentBusy (exit 2) at once when
    another live command holds it. Never waits. `drill=True` also keeps the drill mark."""
    key = key or environment
    path = lock_path(state_dir, key)
    me = threading.get_ident()
    with _held_guard:
        mine = _held.get(str(path))
        nested = reenter and mine is not None and mine[0] == me
        if nested and mine is not None:
            _held[str(path)] = (me, mine[1], mine[2] + 1)
    if nested and mine is not None:
        try:
            yield replace(mine[1], took_over=None, took_over_raw=None)
        finally:
            with _held_guard:
                owner, lease, depth = _held[str(path)]
                _held[str(path)] = (owner, lease, depth - 1)
        return
    held = ExitStack()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = held.enter_context(files.locked(path, wait=False, follow=True))
    except BlockingIOError:
        raise _busy(environment, _read_file(path)) from None
    except OSError as e:
        raise EnvironmentProblem(
            f"cannot open the lock of environment {environment!r} ({path}): {e.strerror}; "
            "make that directory writable (for the lab: DRKIT_LAB_DIR or lab.state_dir)"
        ) from None
    with held:  # closing the lock file releases the flock
        previous = _read(fd)
        took = Holder.from_text(previous) if previous else None
        holder = Holder(command=command, environment=environment, run_id=run_id,
                        operator=operator or _operator(), pid=os.getpid(),
                        host=socket.gethostname(), since=_now(), starttime=_pid_start(os.getpid()))
        lease = Lease(holder=holder, path=path, took_over=took,
                      took_over_raw=previous if previous and took is None else None)
        if previous and on_takeover is not None:
            what = took.describe() if took else f"an unreadable holder record {previous[:80]!r}"
            on_takeover(f"took over the lock of environment {environment!r} left by {what}, "
                        "whose process is gone")
        _write(fd, json.dumps(holder.to_json(), sort_keys=True))
        with _held_guard:
            _held[str(path)] = (me, lease, 1)
        if drill:
            _write_mark(state_dir, key, DrillMark(command, run_id, holder.pid, holder.host,
                                                  holder.since, None, holder.starttime))
        try:
            yield lease
        finally:
            with _held_guard:
                _held.pop(str(path), None)
            if drill:
                _write_mark(state_dir, key, DrillMark(command, run_id, holder.pid, holder.host,
                                                      holder.since, _now(), holder.starttime))
            os.ftruncate(fd, 0)  # we did not die: nothing to take over


def peek(state_dir: Path, key: str) -> Holder | None:
    """Who holds the lock now, without taking it or waiting (for read-only commands).

    None when nobody does. A holder whose process is gone (the next command takes over) is
    returned too: check `.alive`."""
    try:
        text = lock_path(state_dir, key).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return Holder.from_text(text) if text else None


def refuse_if_busy(state_dir: Path, environment: str, key: str) -> None:
    """Raise EnvironmentBusy now when a live command holds the lock, without taking it: for a
    command that must write something (a generated inventory) before it takes the lock, so a
    refused run writes nothing. `hold` remains what excludes."""
    holder = peek(state_dir, key)
    if holder is not None and holder.alive:
        raise _busy(environment, json.dumps(holder.to_json()))


def drill_mark(state_dir: Path, key: str) -> DrillMark | None:
    try:
        data = json.loads(mark_path(state_dir, key).read_text(encoding="utf-8"))
        return DrillMark(**{k: data.get(k) for k in DrillMark.__dataclass_fields__})
    except (OSError, ValueError, TypeError):
        return None


def _busy(environment: str, text: str) -> EnvironmentBusy:
    holder = Holder.from_text(text) if text else None
    if holder is None:
        holder = Holder("(unknown command)", environment, None, "?", 0, "?", "?")
        who = "a command that has not named itself yet"
    else:
        who = holder.describe()
        if not holder.alive:
            who += " (that process is gone, but a process it started still holds the lock)"
    kind = holder.command.split(" ", 1)[0]
    what = {"drill": "drill", "runbook": "runbook", "lab": "lab command"}.get(kind, "command")
    return EnvironmentBusy(
        f"another {what} is running on environment {environment!r}: {who}; nothing was "
        "changed: wait for it to finish, then run this again", holder)


def _read(fd: int) -> str:
    return os.pread(fd, 65536, 0).decode("utf-8", errors="replace").strip()


def _read_file(path: Path) -> str:
    """The holder record of a lock another process holds ("" when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return f.read(65536).decode("utf-8", errors="replace").strip()
    except OSError:
        return ""


def _write(fd: int, text: str) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, (text + "\n").encode(), 0)
    os.fsync(fd)


def _write_mark(state_dir: Path, key: str, mark: DrillMark) -> None:
    files.atomic_write(mark_path(state_dir, key),
                       (json.dumps(asdict(mark), sort_keys=True) + "\n").encode())


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _pid_start(pid: int) -> int | None:
    """Start time (clock ticks since boot) of a live, non-zombie pid; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in (b"Z", b"X"):
        return None
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _operator() -> str:
    from drkit.evidence.recorder import operator

    return operator()


__all__ = ["DrillMark", "EnvironmentBusy", "Holder", "Lease", "drill_mark", "hold", "key_for",
           "lock_path", "peek", "refuse_if_busy"]
