"""A drill with shared run state and execution nodes (issue 18).

- `shared_lease`: the environment's lease in the shared state (drkit.state), taken by the
  drill's driver after the local lock, so a second controller anywhere is refused naming it.
- `SharedJournal`: a drill listener that writes progress and the result to the shared state
  (every write fenced by the lease), where `drkit drill attach` reads them from any controller.
- `start_on_node`: the controller's side of a drill that survives it: the driver is started
  detached (setsid) on the surviving region's execution node, and the controller only follows
  the journal; killing the controller leaves the drill running to its end (and its rollback).
- `follow`: the journal of a run until its result (drkit drill attach).
- `still_held` / `lost`: a driver proves its lease before each phase and stops acting (no phase,
  no rollback) once it lost it: the environment is the new holder's.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from drkit.drill.model import CancelToken, DrillListener, DrillOutcome, PhaseResult, Targets
from drkit.errors import BadInput, RunFailed

if TYPE_CHECKING:
    from drkit.config import Plan
    from drkit.remote import Node
    from drkit.state import HeldLease, JournalEntry, SharedState


@contextmanager
def shared_lease(plan: Plan, env_name: str, command: str, run_id: str,
                 node: str | None = None) -> Iterator[HeldLease | None]:
    """Hold the environment's shared lease for the block (renewed in the background); None
    when the environment has no shared state. LeaseHeld (exit 2) when another holds it."""
    from drkit.state import holding, open_state

    state = open_state(plan, env_name)
    if state is None:
        yield None
        return
    ttl = plan.environment(env_name).state.lease  # type: ignore[union-attr]
    with holding(state, env_name, command, run_id=run_id, ttl=ttl, node=node) as lease:
        yield lease


def still_held(lease: HeldLease, cancel: CancelToken) -> bool:
    """Before a phase starts: prove the lease is still this driver's (a fenced renewal). False
    when it was lost (the lease's on_lost callback cancelled the drill): start nothing more."""
    from drkit.errors import DrkitError
    from drkit.state import LeaseLost

    try:
        lease.check()
    except LeaseLost as e:
        cancel.cancel(f"this driver lost its lease: {e}")
        return False
    except DrkitError as e:  # (reading who took it failed): unproven is not held
        cancel.cancel(f"this driver could not prove its lease: {e}")
        return False
    return True


def gate(lease: HeldLease | None, cancel: CancelToken) -> dict[str, Any]:
    """_run_phases' gate arguments: before each phase but the first, prove the lease (None:
    no gate; the runs are not on this machine or there is no lease)."""
    if lease is None:
        return {}
    held = lease
    return {"gate": lambda _phase: still_held(held, cancel), "gate_timeout_s": held.ttl}


def lost(lease: HeldLease | None) -> bool:
    """Whether this driver lost its shared lease (it may not act on the environment)."""
    return lease is not None and lease.lost is not None


def _iso(at: datetime | None) -> str | None:
    return at.isoformat().replace("+00:00", "Z") if at else None


class SharedJournal(DrillListener):
    """Progress and result to the shared state. A write refused because the lease was lost
    raises: the drill's listener guard switches this journal off and names why in warnings."""

    def __init__(self, lease: HeldLease) -> None:
        self.lease = lease

    def drill_started(self, run_id: str, scenario: str, environment: str, targets: Targets,
                      phases: Any) -> None:
        self.lease.append("started", {"run_id": run_id, "scenario": scenario,
                                      "environment": environment, "phases": list(phases),
                                      "rto_target_s": targets.rto_s,
                                      "rpo_target_s": targets.rpo_s})

    def phase_started(self, name: str, at: datetime) -> None:
        self.lease.append("phase_started", {"name": name, "at": _iso(at)})

    def phase_finished(self, result: PhaseResult) -> None:
        self.lease.append("phase", {"name": result.name, "status": str(result.status),
                                    "started_at": _iso(result.started_at),
                                    "ended_at": _iso(result.ended_at),
                                    "message": result.message})

    def clock_started(self, at: datetime) -> None:
        self.lease.append("clock_started", {"at": _iso(at)})

    def clock_stopped(self, at: datetime, rto_s: float) -> None:
        self.lease.append("clock_stopped", {"at": _iso(at), "rto_s": rto_s})

    def note(self, message: str) -> None:
        self.lease.append("note", {"message": message})

    def drill_finished(self, outcome: DrillOutcome) -> None:
        result = {"verdict": str(outcome.verdict), "exit_code": outcome.exit_code,
                  "scenario": outcome.scenario, "environment": outcome.environment,
                  "rto_s": outcome.rto_s, "rpo_s": outcome.rpo_s,
                  "reasons": list(outcome.reasons), "missing": list(outcome.missing),
                  "warnings": list(outcome.warnings), "evidence_id": outcome.evidence_id,
                  "started_at": _iso(outcome.started_at), "ended_at": _iso(outcome.ended_at)}
        result["artifacts"] = self._artifacts(outcome)
        self.lease.append("finished", result)
        self.lease.finish(result)

    def _artifacts(self, outcome: DrillOutcome) -> list[str]:
        """The run's artifacts (ansible-runner's stdout and job events per run, the progress
        and summary files) to the shared state, so any controller has them, not only the node
        that ran the drill. Bounded: a run folder is not a backup channel."""
        root = outcome.artifacts_dir
        if root is None or not root.is_dir():
            return []
        kept, total = [], 0
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.is_symlink() or path.name not in _ARTIFACTS:
                continue
            size = path.stat().st_size
            if total + size > _ARTIFACTS_MAX:
                break
            name = path.relative_to(root).as_posix()
            self.lease.put_artifact(name, path.read_bytes())
            kept.append(name)
            total += size
        return kept


_ARTIFACTS = {"stdout", "job_events.jsonl", "progress.json", "summary.json"}
_ARTIFACTS_MAX = 64 * 1024 * 1024


# ---------------------------------------------------------------------------------------------
# the controller's side


# AWS settings the detached driver needs to reach the shared state, passed by name and value
# on the node's command line: none of them is a secret (credentials come from the node's own
# profile, role or the file AWS_SHARED_CREDENTIALS_FILE names).
_FORWARD = ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE",
            "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "DRKIT_OPERATOR")


def driver_command(node: Node, *, plan_path: str, scenario: str, env_name: str, run_id: str,
                   args: list[str], environ: dict[str, str]) -> str:
    """The shell command that starts the drill's driver on the node, detached: its own session
    (setsid), no terminal, output to a log in the node's state folder."""
    from pathlib import Path

    bindir = node.python_bindir()
    drkit = str(Path(bindir) / "drkit") if bindir else "drkit"
    log = f"{node.state_dir}/drill-{run_id}.log"
    env = [f"{k}={environ[k]}" for k in _FORWARD if environ.get(k)]
    cmd = ["env", *env, "setsid", "nohup", drkit, "drill", "run", scenario, "--env", env_name,
           "--plan", plan_path, "--here", "--run-id", run_id, *args]
    return (f"mkdir -p {shlex.quote(node.state_dir)} && cd {shlex.quote(node.state_dir)} && "
            f"{shlex.join(cmd)} >{shlex.quote(log)} 2>&1 </dev/null &")


def start_on_node(plan: Plan, scenario: str, env_name: str, run_id: str, args: list[str], *,
                  environ: dict[str, str], wait_s: float = 120.0,
                  sleep: Callable[[float], None] = time.sleep) -> Node:
    """Start the drill's driver detached on the surviving region's node and wait until it holds
    the environment's lease (its run's meta appears in the shared state). Refuses at once
    (LeaseHeld, exit 2) when a live drill holds the environment."""
    from drkit.remote import surviving_node
    from drkit.state import _held, open_state

    state = open_state(plan, env_name)
    node = surviving_node(plan, env_name)
    if state is None or node is None:
        raise BadInput(f"environment {env_name!r} needs both `state` and `execution_nodes` in "
                       "the plan to run a drill on a node")
    current = state.lease(env_name)
    if current is not None and current.live(state.clock()):
        raise _held(env_name, current)
    cmd = driver_command(node, plan_path=str(plan.path.resolve()), scenario=scenario,
                         env_name=env_name, run_id=run_id, args=args, environ=environ)
    try:
        cp = subprocess.run(node.ssh_argv(["sh", "-c", cmd]), stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RunFailed(f"execution node {node.name}: cannot start the drill: {e}") from e
    if cp.returncode != 0:
        raise RunFailed(f"execution node {node.name}: cannot start the drill (ssh exited "
                        f"{cp.returncode}: {cp.stderr.strip()[-300:]})")
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if state.meta(run_id) is not None or state.result(run_id) is not None:
            return node
        sleep(0.5)
    raise RunFailed(f"execution node {node.name}: the drill's driver did not take the lease "
                    f"of {env_name!r} within {wait_s:.0f}s; see "
                    f"{node.state_dir}/drill-{run_id}.log on the node")


def follow(state: SharedState, run_id: str, on_entry: Callable[[JournalEntry], None], *,
           poll_s: float = 1.0, stop: Callable[[], bool] = lambda: False,
           sleep: Callable[[float], None] = time.sleep) -> dict[str, Any] | None:
    """Tell `on_entry` each journal entry of the run, in order, until its result is written;
    the result (None when `stop()` said to stop first)."""
    seen = 0
    while True:
        result = state.result(run_id)  # read before the journal: nothing is missed after it
        for entry in state.journal(run_id, after=seen):
            on_entry(entry)
            seen = entry.seq
        if result is not None:
            return result
        if stop():
            return None
        sleep(poll_s)


def find_state(plan: Plan, run_id: str, env_name: str | None = None
               ) -> tuple[str, SharedState]:
    """The environment (and its shared state) that holds run `run_id`."""
    from drkit.state import open_state

    names = [env_name] if env_name else [n for n, e in plan.model.environments.items()
                                         if e.state is not None]
    for name in names:
        state = open_state(plan, name)
        if state is not None and state.meta(run_id) is not None:
            return name, state
    raise BadInput(f"run {run_id!r} is in no environment's shared state "
                   f"({', '.join(names) or 'no environment of the plan has `state`'}); "
                   "`drkit drill status` lists the running drills")


def forward_to_node(plan: Plan, env_name: str, args: list[str], *,
                    environ: dict[str, str]) -> int | None:
    """Run `drkit <args> --here` on the environment's surviving node, in the foreground (its
    output is this process's), where a detached drill left its run folder and local marks:
    `drill recover` and `drill resume` from any controller. None when the environment has no
    nodes and shared state (the command runs here); else the remote command's exit code."""
    from pathlib import Path

    from drkit.remote import surviving_node

    e = plan.environment(env_name)
    if e.state is None or not e.execution_nodes:
        return None
    node = surviving_node(plan, env_name)
    assert node is not None
    bindir = node.python_bindir()
    drkit = str(Path(bindir) / "drkit") if bindir else "drkit"
    env = [f"{k}={environ[k]}" for k in _FORWARD if environ.get(k)]
    argv = node.ssh_argv(["env", *env, drkit, *args, "--plan", str(plan.path.resolve()),
                          "--here"])
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, check=False).returncode
    except OSError as e2:
        raise RunFailed(f"execution node {node.name}: cannot run `drkit {args[0]} "
                        f"{args[1]}`: {e2}") from e2
