"""A drill: the scenario's phases in order, the recovery clock, abort and rollback, the verdict.

The recovery path (preflight up to the phase that stops the clock) runs as ONE ansible-runner run:
a generated playbook imports each phase's playbook, and plays are mapped back to phases by their
order. Ansible stops at the first failed task, so a failed preflight stops the drill before
anything is broken. Failback is a second run, after the clock. Measured, not estimated:

- RTO: from the start of the phase that starts the clock (the fault) to the moment the smoke
  phase saw every flow pass through the public entry point (`green_at`, published by the smoke
  playbook with set_stats).
- RPO: a canary writes numbered payments through the entry point for the whole drill; after
  failover, acknowledged payments missing from the new primary are lost (see drkit.flows).
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drkit import engine
from drkit.config import Phase, Plan, Scenario
from drkit.content import collection_dir
from drkit.drill import judge
from drkit.drill.judge import PhaseStatus, Verdict
from drkit.drill.model import (
    CanaryFigures,
    CancelToken,
    DrillListener,
    DrillOptions,
    DrillOutcome,
    GateDecision,
    GateRequest,
    OutcomeBuilder,
    PhaseResult,
    PlaybookRunner,
    Published,
    Recovery,
    Resume,
    ResumedFrom,
    SmokeRun,
    Targets,
    _parse_ts,
)
from drkit.drill.phases import HeldRun, _now, _run_phases
from drkit.errors import BadInput, DrkitError
from drkit.files import under
from drkit.targets import Target, target

if TYPE_CHECKING:
    from drkit.flows import Reconciliation

# ---------------------------------------------------------------------------------------------
# One drill per environment


@contextmanager
def drill_lock(state_dir: Path, env_name: str, notes: DrillListener) -> Iterator[None]:
    """The environment lock (drkit.envlock) as a drill command takes it, by environment name."""
    from drkit import envlock

    with envlock.hold(state_dir, env_name, "drill run", on_takeover=notes.note):
        yield


# ---------------------------------------------------------------------------------------------
# The drill


def _targets(plan: Plan, scenario: Scenario) -> Targets:
    services = [plan.model.services[s] for s in scenario.services]
    return Targets(rto_s=min(s.rto for s in services), rpo_s=min(s.rpo for s in services))


def _flows(plan: Plan, scenario: Scenario, env_name: str) -> list[str]:
    """The smoke flows the scenario's services name, from the environment's flow pack."""
    return plan.smoke_flows(env_name, scenario.services)


def new_run_id() -> str:
    return _now().strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def run_drill(
    plan: Plan,
    scenario_name: str,
    env_name: str,
    *,
    options: DrillOptions | None = None,
    listener: DrillListener | None = None,
    cancel: CancelToken | None = None,
    runner: PlaybookRunner | None = None,
) -> DrillOutcome:
    """Rehearse `scenario_name` on `env_name` and return the outcome. Raises only for bad input
    or when the drill cannot start; anything that happens once it runs is in the outcome.

    `runner` runs the playbooks (default: `engine.run_playbook`, through ansible-runner)."""
    options = options or DrillOptions()
    cancel = cancel or CancelToken()
    scenario = plan.scenario(scenario_name)
    env = plan.environment(env_name)
    if env.protected and options.confirm != env_name and not options.dry_run:
        raise BadInput(
            f"environment {env_name!r} is protected: add --confirm {env_name} to run a drill on it"
        )
    tgt = target(plan, env_name)
    targets = _targets(plan, scenario)
    flows = _flows(plan, scenario, env_name)
    phases = list(scenario.phases)
    if options.preflight_only:
        phases = phases[:1]
    recovery = [p for p in phases if not p.failback]
    failback = [p for p in phases if p.failback] if options.failback else []
    left_out = [p for p in phases if p.failback and not options.failback]

    from drkit.governance import blackout

    # Blackout windows first: a refused run writes nothing anywhere.
    window = blackout.check(plan, _now(), options.override_blackout, operator=options.operator)
    run_id = options.run_id or new_run_id()
    # A name from the plan never leaves the runs folder (issue 16).
    run_dir = under(tgt.state_dir / "runs", f"{run_id}-{scenario_name}")
    smoke_timeout = options.smoke_timeout_s or max(30.0, 2 * targets.rto_s)
    extravars = {
        **tgt.extravars,
        "drkit_run_id": run_id,
        "drkit_run_dir": str(run_dir),
        "drkit_scenario": scenario_name,
        "drkit_rto_target_s": targets.rto_s,
        "drkit_rpo_target_s": targets.rpo_s,
        "drkit_smoke_flows": flows,
        # The environment's flow pack (issue 14): what the smoke action sends and expects.
        "drkit_smoke_pack": tgt.flow_pack,
        "drkit_smoke_timeout_s": smoke_timeout,
        "drkit_python": _python(),
    }
    # Filled in as the run goes; listeners, the summary and the caller get it frozen (build).
    outcome = OutcomeBuilder(
        id=run_id, scenario=scenario_name, environment=env_name, started_at=_now(),
        targets=targets, dry_run=options.dry_run, artifacts_dir=run_dir,
    )
    # A dry run or a preflight check proves no recovery, so it leaves no drill record (it would
    # count as a drill in `drkit status`); its summary and artifacts stay in the run directory.
    record = options.evidence and not options.dry_run and not options.preflight_only
    # A listener that fails (stdout closed, journal disk full) is reported and switched off;
    # the drill goes on (issue 11).
    listeners = _Listeners(outcome)
    listeners.add("progress journal", _Journal(run_dir, outcome, scenario_name, env_name,
                                               listeners))
    caller = listener or DrillListener()
    listeners.add(f"progress listener {type(caller).__name__}", caller)
    listener = listeners
    if options.resume is not None:
        outcome.resumed_from = ResumedFrom(options.resume.run_id, options.resume.evidence_id)
        finished = [p.name for p in options.resume.done if p.status == PhaseStatus.OK]
        recovery = [p for p in recovery if p.name not in finished]
        if scenario.holds:
            # Re-check what the first run finished before building on it.
            recovery = [Phase(name="holds", playbook=scenario.holds)] + recovery
            extravars["drkit_completed_phases"] = finished
    from drkit import envlock

    # One change at a time (drkit.envlock): a refused drill changes nothing. A dry run or a
    # preflight check changes nothing either, so it never waits for the lock.
    changes = not options.dry_run and not options.preflight_only
    lock = envlock.hold(tgt.state_dir, env_name, ("drill resume " if options.resume else
                                                  "drill run ") + scenario_name,
                        key=envlock.key_for(plan, env_name), run_id=run_id,
                        operator=options.operator, drill=True,
                        on_takeover=listener.note) if changes else nullcontext()
    busy = None if changes else envlock.peek(tgt.state_dir, envlock.key_for(plan, env_name))
    if busy is not None and busy.alive:
        # Read-only: it does not wait, but what it sees may be another command's work.
        listener.note(f"{busy.describe()} is changing environment {env_name!r} meanwhile")
    # issue 18: with execution nodes, playbooks run on the surviving region's node (streamed),
    # unless this process is the driver on that node; with shared state, the environment's
    # lease is taken there too, and progress and the result go there (drkit.drill.shared).
    from drkit.drill import shared

    if runner is None and env.execution_nodes and not options.on_node:
        import functools

        from drkit.remote import surviving_node

        runner = functools.partial(engine.run_playbook, node=surviving_node(plan, env_name))
    shared_cm = shared.shared_lease(plan, env_name, ("drill resume " if options.resume else
                                                     "drill run ") + scenario_name, run_id,
                                    node=os.uname().nodename if options.on_node else None) \
        if changes else nullcontext()
    with lock as lease, shared_cm as shared_lease:
        if shared_lease is not None:
            listeners.add("shared journal", shared.SharedJournal(shared_lease))
            # A driver that lost its lease stops acting at once (issue 18): the running phase
            # is cancelled, no further phase starts, nothing is rolled back (the environment
            # is the new holder's now).
            shared_lease.on_lost(lambda e: cancel.cancel(f"this driver lost its lease: {e}"))
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # evidence too (issue 15)
        _write_vars_file(run_dir, extravars)
        # Inside the lock: a drill refused because another one runs keeps its approval.
        gov = _Governance.start(plan, scenario_name, env_name, options, run_id, window,
                                enforce=not options.dry_run and not options.preflight_only)
        gov.lock = lease.to_evidence() if lease is not None else None
        rec = _open_evidence(plan, scenario_name, env_name, scenario, tgt, options, gov) \
            if record else None
        if rec is not None:
            # Before the caller's listener: it hears drill_finished with the evidence id.
            listeners.add(f"evidence recorder (record {rec.id} stays open; `drkit drill "
                          "recover` seals it as interrupted)",
                          _Evidence(plan, rec, gov, run_dir, listeners, outcome), index=1)
        listener.drill_started(run_id, scenario_name, env_name, targets,
                               [p.name for p in recovery + failback])
        canary = None
        try:
            if not options.dry_run and not options.preflight_only and tgt.entry_url:
                canary = _start_canary(tgt, run_id, options.canary_rate)
            _drive(plan, tgt, scenario, recovery, failback, left_out, outcome, extravars,
                   options, listener, cancel, canary, run_dir, runner, lease=shared_lease)
        except DrkitError as e:
            # Once a drill runs, what goes wrong is part of its outcome and its evidence.
            outcome.verdict = Verdict.ABORTED
            outcome.reasons.append(f"could not complete: {e}")
            if listeners.clock is not None and changes and not shared.lost(shared_lease):
                # The fault was injected (the clock started): never leave the environment
                # half failed over because the drill could not go on.
                try:
                    rb = _rollback(plan, tgt, scenario, outcome, extravars, listener, run_dir,
                                   runner)
                except DrkitError as e2:
                    outcome.reasons.append(f"rollback could not run: {e2}")
                else:
                    if rb is not None:
                        outcome.phases.append(rb)
                        if rb.status != PhaseStatus.OK:
                            outcome.reasons.append(f"rollback failed: {rb.message}")
        finally:
            if canary is not None:
                canary.stop()
                outcome.canary = CanaryFigures(options.canary_rate, len(canary.acked),
                                               canary.failures)
            outcome.ended_at = _now()
            _write_summary(run_dir, outcome.build())
            # The evidence recorder seals the record; a listener that fails adds a warning.
            listener.drill_finished(outcome.build())
            _write_summary(run_dir, outcome.build())
    _notify(plan, outcome.build(), listener)
    return outcome.build()


class _Listeners(DrillListener):
    """The drill's one listener: tells each of its listeners, in order, every hook guarded. A
    listener that raises is named in the outcome's warnings and switched off; the drill and the
    other listeners go on (chaostoolkit-lib's run.py guards its event handlers the same way), so
    a broken progress writer or a failed seal never stops a drill half way, never skips its
    rollback, and never loses its verdict (issue 13).

    It also keeps when the recovery clock started: the drill decides on a rollback from it, not
    from a listener that may have been switched off."""

    def __init__(self, outcome: OutcomeBuilder) -> None:
        self.outcome = outcome
        self.members: list[tuple[str, DrillListener]] = []
        self.off: set[int] = set()
        self.clock: datetime | None = None

    def add(self, label: str, listener: DrillListener, *, index: int | None = None) -> None:
        """`label` names the listener in a warning ("progress listener Rich")."""
        self.members.insert(len(self.members) if index is None else index, (label, listener))

    def _call(self, hook: str, *args: Any) -> None:
        for label, member in list(self.members):
            self._tell(label, member, hook, *args)

    def _tell(self, label: str, member: DrillListener, hook: str, *args: Any) -> None:
        if id(member) in self.off:
            return
        try:
            getattr(member, hook)(*args)
        except Exception as e:  # noqa: BLE001 - contained: reported, switched off
            self.off.add(id(member))
            self.outcome.warnings.append(
                f"{label} failed in {hook} and was switched off: {type(e).__name__}: {e}")

    def drill_started(self, *a: Any) -> None:
        self._call("drill_started", *a)

    def phase_started(self, name: str, at: datetime) -> None:
        self._call("phase_started", name, at)

    def phase_finished(self, result: PhaseResult) -> None:
        self._call("phase_finished", result)

    def task_finished(self, phase: str, result: engine.TaskResult) -> None:
        self._call("task_finished", phase, result)

    def clock_started(self, at: datetime) -> None:
        self.clock = at
        self._call("clock_started", at)

    def clock_stopped(self, at: datetime, rto_s: float) -> None:
        self._call("clock_stopped", at, rto_s)

    def note(self, message: str) -> None:
        self._call("note", message)

    def drill_finished(self, outcome: DrillOutcome) -> None:
        # Each hears the outcome as it stands at its turn: with the evidence id the recorder
        # before it obtained, and a warning naming a listener before it that failed.
        for label, member in list(self.members):
            self._tell(label, member, "drill_finished", self.outcome.build())


class _Journal(DrillListener):
    """Writes progress.json as each phase ends, so a drill killed half way leaves what it
    finished and when its fault happened (for resume)."""

    def __init__(self, run_dir: Path, outcome: OutcomeBuilder, scenario: str, environment: str,
                 notes: DrillListener) -> None:
        self.path, self.outcome = run_dir / "progress.json", outcome
        self.scenario, self.environment = scenario, environment
        self.notes = notes  # the other listeners hear when the journal stops
        self.done: list[PhaseResult] = []
        self.clock: datetime | None = None
        self.broken = False

    def drill_started(self, *a: Any) -> None:
        self._write()

    def phase_finished(self, result: PhaseResult) -> None:
        if result.started_at is not None:
            self.done.append(result)
            self._write()

    def clock_started(self, at: datetime) -> None:
        self.clock = at
        self._write()

    def _write(self) -> None:
        if self.broken:
            return
        try:
            self._write_progress()
        except Exception as e:  # noqa: BLE001 - a journal that fails must not stop the drill
            self.broken = True
            self.outcome.warnings.append(f"progress journal {self.path} switched off: {e}")
            self.notes.note(f"progress journal switched off: {e} (resume will not know this "
                            "run's progress)")

    def _write_progress(self) -> None:
        clock = self.clock  # told live when the clock's phase starts (see _PhaseTracker)
        data = {"id": self.outcome.id, "scenario": self.scenario,
                "environment": self.environment, "pid": os.getpid(),
                "clock_started_at": clock.isoformat() if clock else None,
                "resumed_from": self.outcome.resumed_from.to_json()
                if self.outcome.resumed_from else None,
                "phases": [{"name": p.name, "status": str(p.status),
                            "started_at": p.started_at.isoformat() if p.started_at else None,
                            "ended_at": p.ended_at.isoformat() if p.ended_at else None,
                            "message": p.message} for p in self.done]}
        _atomic_json(self.path, data)


@dataclass
class _Governance:
    """Blackout windows and four-eyes approvals, checked before anything runs."""

    blackout: Any = None
    request: Any = None
    lock: Any = None  # the environment lock held (drkit.envlock), and any takeover

    @classmethod
    def start(cls, plan: Plan, scenario: str, env: str, options: DrillOptions, run_id: str,
              window: Any, *, enforce: bool) -> _Governance:
        from drkit.governance import approvals

        gov = cls(blackout=window)
        if enforce:
            gov.request = approvals.require(plan, scenario, env, options.request,
                                            operator=options.operator, run_id=run_id)
        return gov

    def to_evidence(self) -> dict[str, Any]:
        return {"approval": self.request.to_evidence() if self.request else None,
                "blackout": self.blackout.to_evidence() if self.blackout else None,
                "lock": self.lock}


def _evidence_files(plan: Plan, scenario: Scenario, tgt: Target) -> list[Path]:
    """Every playbook, task file, module, action plugin, template and inventory file a drill
    can use."""
    files = [plan.resolve(p.playbook) for p in scenario.phases]
    if scenario.rollback:
        files.append(plan.resolve(scenario.rollback))
    # Terraform modules too (iac/): the evidence hashes every file a run can execute (issue 15).
    for folder in ("playbooks/adapters", "playbooks/templates", "iac"):
        if (plan.root / folder).is_dir():
            files.append(plan.root / folder)
    # drkit's collection: its modules, action plugins and module_utils.
    files.append(collection_dir() / "plugins")
    files.append(tgt.inventory)
    return files


def _open_evidence(plan: Plan, name: str, env: str, scenario: Scenario, tgt: Target,
                   options: DrillOptions, gov: _Governance) -> Any:
    from drkit import evidence

    store = evidence.open_store(options.store or plan.model.evidence.store, plan=plan)
    evidence.recover_interrupted(store, plan=plan)
    approved_by = gov.request.approved_by if gov.request else None
    return evidence.Recorder.open(
        store, kind="drill", name=name, environment=env, plan=plan, approved_by=approved_by,
        change_id=options.change_id, files=_evidence_files(plan, scenario, tgt),
        secrets=tgt.secrets, aws_env=tgt.aws_env,
    )


class _Evidence(DrillListener):
    """Seals the drill's write-ahead record (opened before anything ran) when the drill ends:
    phases, tasks, artifacts, the verdict. If sealing fails, the drill's listeners contain it:
    the outcome keeps its verdict and says the record is not sealed, the run folder keeps the
    summary and artifacts, and the open record is sealed as interrupted by `drkit drill recover`
    or the next drill (evidence.recover_interrupted)."""

    def __init__(self, plan: Plan, rec: Any, gov: _Governance, run_dir: Path,
                 notes: DrillListener, builder: OutcomeBuilder) -> None:
        self.plan, self.rec, self.gov, self.run_dir, self.notes = plan, rec, gov, run_dir, notes
        self.builder = builder  # the sealed record's id goes into the drill's outcome

    def drill_finished(self, outcome: DrillOutcome) -> None:
        self.builder.evidence_id = _seal(self.plan, self.rec, outcome, self.gov, self.run_dir,
                                         self.notes)
        self.builder.evidence_warnings.extend(self.rec.warnings)
        _write_summary(self.run_dir, self.builder.build())


def _write_vars_file(run_dir: Path, extravars: dict[str, Any]) -> None:
    """<run dir>/vars.yml: the variables every phase of this run gets, so a scenario's phase
    playbook also runs on its own (`ansible-playbook -i INVENTORY -e @vars.yml PHASE.yml`, as an
    Automation Controller job template would; docs/architecture.md). Redacted as the run folder
    is (issue 15): a secret's value is replaced, and must come from the runner's own store."""
    from drkit.evidence.redact import redact_data
    from drkit.extravars import dump_unsafe
    from drkit.files import atomic_write

    data = redact_data(dict(extravars))
    atomic_write(run_dir / "vars.yml", dump_unsafe(data).encode("utf-8"), mode=0o600)


def _seal(plan: Plan, rec: Any, outcome: DrillOutcome, gov: _Governance, run_dir: Path,
          listener: DrillListener) -> str:
    """Phases, tasks and artifacts into the record, then seal it (signed, chained); the sealed
    record's id."""
    from drkit.governance import approvals, findings

    clock_phases = _clock_phases(plan.scenario(outcome.scenario))
    for p in outcome.phases:
        rec.add_phase(p.name, status=str(p.status), started_at=p.started_at or outcome.started_at,
                      ended_at=p.ended_at, counts_for_rto=p.name in clock_phases,
                      message=p.message)
        if p.tasks:
            # Tasks only: the run's stdout and events are added once, below, not per phase.
            rec.add_tasks(_TasksOnly(p.tasks), phase=p.name)
    for label in ("recovery", "failback", "rollback"):
        for suffix in ("stdout", "job_events.jsonl"):
            path = run_dir / label / suffix
            if path.is_file():
                rec.add_artifact(path, f"{label}.{suffix}")
    data = outcome.to_json()
    try:
        applied = findings.apply_outcome(plan, data, rec.id)
        register = applied.to_evidence()
    except DrkitError as e:
        register = {"error": str(e)}
        listener.note(f"findings register not updated: {e}")
    summary = {
        **data,
        # met: None when not measured (never a default from the missing figure).
        "rto": {**data["rto"], "measured_s": outcome.rto_s},
        "rpo": {**data["rpo"], "measured_s": outcome.rpo_s},
        "clock": {"started_at": data["rto"]["clock_started_at"],
                  "stopped_at": data["rto"]["clock_stopped_at"],
                  "started_source": data["rto"]["clock_started_source"],
                  "stopped_source": data["rto"]["clock_stopped_source"],
                  "canary_first_failure_at": data["rto"]["canary_first_failure_at"]},
        "findings": [{"severity": f.severity, "check": f.check, "detail": f.message}
                     for f in outcome.findings],
        "governance": gov.to_evidence(),
        "findings_register": register,
    }
    sealed = rec.seal(str(outcome.verdict), summary)
    if gov.request is not None:
        approvals.record_run(plan, gov.request.id, run_id=outcome.id, evidence_id=sealed.id)
    return str(sealed.id)


def _clock_phases(scenario: Scenario) -> set[str]:
    """The phases on the recovery clock: from the one that starts it to the one that stops it."""
    names = [p.name for p in scenario.phases]
    start = next((i for i, p in enumerate(scenario.phases) if p.starts_clock), None)
    stop = next((i for i, p in enumerate(scenario.phases) if p.stops_clock), len(names) - 1)
    return set(names[start:stop + 1]) if start is not None else set()


@dataclass(frozen=True)
class _TasksOnly:
    """The part of an engine RunResult that Recorder.add_tasks reads, for one phase's tasks."""

    tasks: tuple[engine.TaskResult, ...]
    ok: bool = True
    playbook: str = ""
    stdout_path: Path = Path("/nonexistent/stdout")
    events_path: Path = Path("/nonexistent/job_events.jsonl")

    @property
    def started_at(self) -> datetime:
        return self.tasks[0].started_at

    @property
    def ended_at(self) -> datetime:
        return self.tasks[-1].ended_at


def _notify(plan: Plan, outcome: DrillOutcome, listener: DrillListener) -> None:
    """Webhooks from the plan; a failed delivery is reported, never changes the outcome."""
    if not plan.model.notify or outcome.dry_run:
        return
    from drkit import notify

    for delivery in notify.send(plan.model.notify, outcome.to_json()):
        if not delivery.ok:
            listener.note(f"notification to {delivery.target} failed after "
                          f"{delivery.attempts} attempts: {delivery.error}")


def _python() -> str:
    import sys

    return sys.executable


def _start_canary(tgt: Target, run_id: str, rate: float) -> Any:
    """The RPO canary, when the environment's flow pack declares one (else None: RPO is not
    measured, and a drill with an RPO target cannot pass)."""
    from drkit import flows

    assert tgt.entry_url is not None  # the caller starts a canary only with an entry URL
    pack = tgt.pack()
    if pack is None or pack.canary is None:
        return None
    canary = flows.Canary(tgt.entry_url, tgt.ca_file, run_id, rate_per_s=rate,
                          token=tgt.api_token, pack=pack)
    canary.start()
    return canary


def _run_recovery(
    plan: Plan, tgt: Target, recovery: list[Phase], outcome: OutcomeBuilder,
    extravars: dict[str, Any], options: DrillOptions, listener: DrillListener,
    cancel: CancelToken, run_dir: Path, runner: PlaybookRunner | None = None,
    lease: Any = None,
) -> tuple[list[PhaseResult], dict[str, Any], bool]:
    """The recovery path: one run per stretch between gates (one run when there are none).
    With a shared lease (issue 18) the lease is proven (a fenced renewal) before each phase
    starts, and a driver that lost it starts none: a gate play between phases waits for the
    driver's answer (runs on this machine), or one run per phase (runs streamed elsewhere)."""
    results: list[PhaseResult] = []
    stats: dict[str, Any] = {}
    if options.resume is not None:
        if options.resume.clock_started_at is not None:
            # The clock still runs from the original fault (also kept in progress.json, so a
            # second resume counts from it too).
            listener.clock_started(options.resume.clock_started_at)
        # (run_drill already left the finished phases out of `recovery`.)
        results += [p for p in options.resume.done if p.status == PhaseStatus.OK]
    from dataclasses import replace

    from drkit.drill import shared

    gated = lease is not None and runner is None
    segments: list[list[Phase]] = []
    for ph in recovery:
        if not segments or (ph.gate and not options.dry_run) or (lease is not None
                                                                  and not gated):
            segments.append([])
        segments[-1].append(ph)
    cancelled = False
    for i, seg in enumerate(segments):
        if seg[0].gate and not options.dry_run:
            decision = _ask_gate(seg[0].name, results, [p.name for s in segments[i:] for p in s],
                                 options, outcome)
            outcome.gates.append(decision)
            listener.note(f"gate before {seg[0].name}: "
                          f"{'approved' if decision.approved else 'refused'} by {decision.by} "
                          f"({decision.how})")
            if not decision.approved:
                cancel.cancel(f"gate before {seg[0].name} refused by {decision.by}")
                results += [PhaseResult(p.name, PhaseStatus.SKIPPED, None, None)
                            for s in segments[i:] for p in s]
                return results, stats, True
        if lease is not None and not shared.still_held(lease, cancel):
            results += [PhaseResult(p.name, PhaseStatus.SKIPPED, None, None, (),
                                    "not started: this driver lost its lease")
                        for s in segments[i:] for p in s]
            return results, stats, True
        label = "recovery" if i == 0 else f"recovery-{i + 1}"
        # A dry run breaks nothing, so no recovery clock runs.
        clock = None if options.dry_run else next((p.name for p in seg if p.starts_clock), None)
        res, run = _run_phases(plan, tgt, seg, label=label, run_dir=run_dir,
                               extravars=extravars, check=options.dry_run,
                               listener=listener, cancel=cancel, clock_phase=clock,
                               runner=runner, **shared.gate(lease if gated else None, cancel))
        if shared.lost(lease):
            res = [replace(p, message="not started: this driver lost its lease")
                   if p.status == PhaseStatus.SKIPPED and p.started_at is None else p
                   for p in res]
        results += res
        stats.update(run.facts)
        cancelled = run.status == engine.RunStatus.CANCELED
        if cancelled or any(p.status in (PhaseStatus.FAILED, PhaseStatus.ERROR) for p in res):
            # (runs streamed elsewhere: a run per phase, issue 18) say why they never started
            why = "not started: this driver lost its lease" if shared.lost(lease) else ""
            results += [PhaseResult(p.name, PhaseStatus.SKIPPED, None, None, (), why)
                        for s in segments[i + 1:] for p in s]
            break
    return results, stats, cancelled


def _run_failback(plan: Plan, tgt: Target, failback: list[Phase], run_dir: Path,
                  extravars: dict[str, Any], listener: DrillListener, cancel: CancelToken,
                  runner: PlaybookRunner | None, lease: Any
                  ) -> tuple[list[PhaseResult], engine.RunResult | None]:
    """Failback's phases as one run (gated between phases with a lease, as the recovery run);
    with a lease and runs streamed elsewhere (issue 18), one run per phase, the lease proven
    before each (before the first by the caller), as for the recovery phases."""
    from drkit.drill import shared

    if lease is None or runner is None or len(failback) < 2:
        return _run_phases(plan, tgt, failback, label="failback", run_dir=run_dir,
                           extravars=extravars, check=False, listener=listener, cancel=cancel,
                           runner=runner, **shared.gate(lease if runner is None else None,
                                                        cancel))
    results: list[PhaseResult] = []
    run = None
    for i, ph in enumerate(failback):
        if i and not shared.still_held(lease, cancel):
            results += [PhaseResult(p.name, PhaseStatus.SKIPPED, None, None, (),
                                    "not started: this driver lost its lease")
                        for p in failback[i:]]
            break
        res, run = _run_phases(plan, tgt, [ph], label="failback" if i == 0 else
                               f"failback-{i + 1}", run_dir=run_dir, extravars=extravars,
                               check=False, listener=listener, cancel=cancel, runner=runner)
        results += res
        if any(p.status != PhaseStatus.OK for p in res):
            results += [PhaseResult(p.name, PhaseStatus.SKIPPED, None, None)
                        for p in failback[i + 1:]]
            break
    return results, run


def _ask_gate(phase: str, done: list[PhaseResult], nxt: list[str], options: DrillOptions,
              outcome: OutcomeBuilder) -> GateDecision:
    from drkit.evidence.recorder import operator

    who = options.operator or operator()
    if options.gate is not None:
        return options.gate(GateRequest(phase, tuple(done), tuple(nxt)))
    if options.approve_gates and options.request:
        return GateDecision(phase, True, who, _now(), "--approve-gates")
    return GateDecision(phase, False, who, _now(),
                        "refused: unattended gates need --approve-gates and an approved "
                        "--request")


def _drive(
    plan: Plan, tgt: Target, scenario: Scenario, recovery: list[Phase], failback: list[Phase],
    left_out: list[Phase], outcome: OutcomeBuilder, extravars: dict[str, Any],
    options: DrillOptions, listener: DrillListener, cancel: CancelToken, canary: Any,
    run_dir: Path, runner: PlaybookRunner | None = None, lease: Any = None,
) -> None:
    """Run the phases, roll back when needed, collect what was observed; then judge it.

    Failback's run is started ahead, beside the recovery run, and held at a gate before its
    first phase (issue 19: the whole drill paid an ansible-playbook start-up between its two
    runs): it is told go only where failback would have been started, after the recovery run
    ended, its canary's payments were reconciled and the recovery judged; everywhere else it is
    stopped, before any rollback, and nothing of it runs. Runs elsewhere than this machine's
    engine (execution nodes, a runner passed in) and drills with operator gates, where a person
    decides, start failback's run then, as before."""
    from drkit.drill import shared

    mode = judge.Mode.CHECK if options.preflight_only else (
        judge.Mode.DRY_RUN if options.dry_run else judge.Mode.DRILL)
    held = None
    if mode == judge.Mode.DRILL and failback and runner is None and not any(
            p.gate for p in recovery):
        held = HeldRun(plan, tgt, failback, label="failback", run_dir=run_dir,
                       extravars=extravars, listener=listener, cancel=cancel,
                       **shared.gate(lease, cancel))
    try:
        _drive_held(plan, tgt, scenario, recovery, failback, left_out, outcome, extravars,
                    options, listener, cancel, canary, run_dir, runner, lease, mode, held)
    finally:
        if held is not None:
            held.close()


def _drive_held(
    plan: Plan, tgt: Target, scenario: Scenario, recovery: list[Phase], failback: list[Phase],
    left_out: list[Phase], outcome: OutcomeBuilder, extravars: dict[str, Any],
    options: DrillOptions, listener: DrillListener, cancel: CancelToken, canary: Any,
    run_dir: Path, runner: PlaybookRunner | None, lease: Any, mode: judge.Mode,
    held: HeldRun | None,
) -> None:
    from drkit.drill import shared

    results, stats, run_cancelled = _run_recovery(plan, tgt, recovery, outcome, extravars,
                                                  options, listener, cancel, run_dir, runner,
                                                  lease)
    outcome.phases = list(results)
    if stats.get("drkit_preflight") is not None:
        outcome.preflight = Published.of(stats["drkit_preflight"])
    smoke = SmokeRun.published(stats.get("drkit_smoke"))
    outcome.smoke = smoke.results if smoke is not None else ()

    by_name = {p.name: p for p in results}
    start_phase = next((p for p in recovery if p.starts_clock), None)
    if options.resume is not None and options.resume.clock_started_at is not None:
        # The recovery clock continues from the original fault, not from this run's start.
        outcome.clock_started_at = options.resume.clock_started_at
        outcome.clock_started_source = (f"the fault of the interrupted run "
                                        f"{options.resume.run_id} (resumed)")
    elif start_phase and (phase_at := by_name[start_phase.name].started_at) and not (
            options.dry_run):
        # (the listener heard of the phase start as it happened: never later than this)
        outcome.clock_started_at, outcome.clock_started_source, \
            outcome.canary_first_failure = clock_start(start_phase.name, phase_at,
                                                       stats.get("drkit_fault"), canary)

    destructive_started = outcome.clock_started_at is not None
    failed = next((p for p in results if p.status in (PhaseStatus.FAILED, PhaseStatus.ERROR)),
                  None)
    # A run that died under us (not a check that failed) cannot judge the recovery: aborted.
    died = failed is not None and failed.status == PhaseStatus.ERROR and mode == judge.Mode.DRILL
    if died and failed is not None and not cancel.reason:
        cancel.reason = f"phase {failed.name}: {failed.message}"
    cancelled = cancel.cancelled or run_cancelled or died

    rollback: PhaseResult | None = None
    fb_results: list[PhaseResult] = []
    aborted = cancel.reason or "the run was cancelled" if cancelled else None
    announced = False  # the listener already heard where the recovery clock stopped
    if mode == judge.Mode.DRILL:
        if canary is not None and destructive_started and not cancelled and failed is None and (
                options.resume is None):
            # (A resumed drill's canary started after the fault: the original canary's
            # acknowledgements died with it, so data loss cannot be measured again.)
            from drkit import flows

            fault_at = outcome.clock_started_at
            # destructive_started: the clock started; a canary runs only with an entry URL.
            assert fault_at is not None and tgt.entry_url is not None
            rec = flows.reconcile(tgt.entry_url, tgt.ca_file, outcome.id, list(canary.acked),
                                  fault_at, token=tgt.api_token, pack=tgt.pack())
            outcome.reconciliation = rec
            outcome.rpo_s = rec.rpo_s
            outcome.lost_payments = rec.lost_count
        if not cancelled and failed is None and destructive_started:
            # Tell the operator where the clock stopped as soon as the recovery run observed
            # it, before failback (which is off the clock); the final verdict is judged below
            # over everything, from the same observations.
            early = judge.judge(observations(
                mode, results, set(), _flows(plan, scenario, tgt.environment),
                outcome, smoke, aborted=None, rollback=None, canary=canary is not None))
            if early.rto_s is not None and early.clock_stopped_at is not None:
                listener.clock_stopped(early.clock_stopped_at, early.rto_s)
                announced = True
        preflight_failed = failed is not None and not died and failed.name == recovery[0].name \
            and not destructive_started
        if held is not None and not (failed is None and failback and not cancelled
                                     and not shared.lost(lease)):
            held.stop()  # failback will not go: its held run must not wait behind a rollback
        if shared.lost(lease):
            # The environment is the lease's new holder's: this driver touches it no more.
            outcome.reasons.append("this driver lost its lease: it ran no rollback and no "
                                   "failback; the lease's new holder owns the environment "
                                   "(`drkit drill status`; `drkit drill recover`)")
        elif cancelled or (failed is not None and not preflight_failed):
            if destructive_started or cancelled:
                rollback = _rollback(plan, tgt, scenario, outcome, extravars, listener, run_dir,
                                     runner)
        elif failed is None and failback and lease is not None and not shared.still_held(
                lease, cancel):
            if held is not None:
                held.stop()
            aborted = cancel.reason
            outcome.reasons.append("this driver lost its lease before failback: it ran no "
                                   "failback and no rollback; the lease's new holder owns the "
                                   "environment")
        elif failed is None and failback:
            fb_results, _ = held.go() if held is not None else _run_failback(
                plan, tgt, failback, run_dir, extravars, listener, cancel, runner, lease)
            bad = next((p for p in fb_results if p.status != PhaseStatus.OK), None)
            if bad is not None and shared.lost(lease):
                aborted = cancel.reason
                outcome.reasons.append("this driver lost its lease during failback: it ran no "
                                       "rollback; the lease's new holder owns the environment")
            elif bad is not None and (cancel.cancelled or bad.status == PhaseStatus.ERROR):
                aborted = cancel.reason or f"failback phase {bad.name}: {bad.message}"
                rollback = _rollback(plan, tgt, scenario, outcome, extravars, listener, run_dir,
                                     runner)
            elif canary is not None and outcome.clock_started_at is not None \
                    and outcome.reconciliation is not None:
                # Without a fault time (no phase started the clock) there is nothing to
                # reconcile against, as for the recovery reconciliation above. After a failback
                # phase that failed its check (issue 17: reconcile-clients found split-brain)
                # the canary's figures still count: what did failback throw away?
                from drkit import flows

                assert tgt.entry_url is not None  # a canary runs only with an entry URL
                try:
                    after = flows.reconcile(tgt.entry_url, tgt.ca_file, outcome.id,
                                            list(canary.acked), outcome.clock_started_at,
                                            token=tgt.api_token, pack=tgt.pack())
                except DrkitError as e:
                    if bad is None:
                        raise
                    outcome.warnings.append(f"no reconciliation after failback: {e}")
                else:
                    outcome.after_failback = after
    judged_phases = list(results)
    if mode == judge.Mode.DRILL:
        # Failback runs only after a recovery that held; otherwise it was not reached.
        judged_phases += fb_results or [PhaseResult(p.name, PhaseStatus.SKIPPED, None, None)
                                        for p in failback]
    outcome.phases = list(judged_phases)
    if rollback is not None:
        outcome.phases.append(rollback)
    outcome.phases += [PhaseResult(p.name, PhaseStatus.SKIPPED, None, None, (),
                                   "left out (--no-failback)") for p in left_out]
    fb_names = {p.name for p in failback}
    obs = observations(
        mode, judged_phases, fb_names, _flows(plan, scenario, tgt.environment),
        outcome, smoke, aborted=aborted, rollback=rollback, canary=canary is not None)
    apply(outcome, judge.judge(obs), listener, announce=not announced)
    if outcome.clock_stopped_at is not None:
        entry = smoke.entry if smoke is not None and smoke.entry else "the entry point"
        outcome.clock_stopped_source = (
            f"the smoke phase's first round in which every flow passed through {entry} (its "
            "green_at)")


def clock_start(phase: str, phase_at: datetime, fault: Any,
                canary: Any) -> tuple[datetime, str, tuple[datetime, datetime] | None]:
    """When the recovery clock starts, how that was obtained, and the canary's first failed
    request since `phase` started (issue 19: the clock measures the outage, not drkit).

    The fault step publishes `drkit_fault` (drkit.dr.lose_region: `issued_at`, just before its
    first kill, and `confirmed_at`, when everything was seen gone). The clock starts at
    `issued_at`: the outage cannot have begun earlier. It never starts later than the real
    effect: without a usable time from the fault step, or when the canary saw the entry point
    fail before that time, it starts when the fault phase started, and the source says why."""
    first = canary.first_failure(phase_at) if canary is not None else None
    fallback = f"start of phase {phase}"
    if not isinstance(fault, dict) or not isinstance(fault.get("issued_at"), str):
        return phase_at, f"{fallback} (its fault step published no time of its own)", first
    try:
        issued = _parse_ts(fault["issued_at"])
    except ValueError:
        issued = None
    if issued is None or issued < phase_at:
        return phase_at, (f"{fallback} (the fault step's time {fault['issued_at']!r} is not "
                          "within the phase)"), first
    if not fault.get("database_pid") and not fault.get("instances"):
        return phase_at, f"{fallback} (the fault step found nothing running to stop)", first
    if first is not None and first[1] < issued:
        return phase_at, (f"{fallback}: the canary's first failed request "
                          f"({_iso(first[1])}) came before the fault step's time "
                          f"({fault['issued_at']})"), first
    source = (f"phase {phase}'s fault step: issued at {fault['issued_at']}, everything seen "
              f"down at {fault.get('confirmed_at')}")
    if first is not None:
        source += f"; the canary's first failed request ended at {_iso(first[1])}, after it"
    return issued, source, first


def observations(mode: judge.Mode, phases: Sequence[PhaseResult], failback: set[str],
                 flows: Sequence[str], outcome: OutcomeBuilder | DrillOutcome,
                 smoke: SmokeRun | None, *, aborted: str | None, rollback: PhaseResult | None,
                 canary: bool) -> judge.Observations:
    """What the run observed, as the judge's typed observations."""
    smoke_obs = None
    if smoke is not None and smoke.entry:
        smoke_obs = judge.SmokeObservation(
            entry=smoke.entry,
            flows=tuple(judge.FlowObservation(r.flow, r.passed, r.detail, reached=r.reached)
                        for r in smoke.results),
            green_at=smoke.green_at)
    return judge.Observations(
        mode=mode,
        phases=tuple(judge.PhaseObservation(p.name, p.status, p.message, p.postconditions,
                                            p.name in failback, reached=p.reached)
                     for p in phases),
        flows=tuple(flows),
        rto_target_s=outcome.targets.rto_s,
        rpo_target_s=outcome.targets.rpo_s,
        clock_started_at=outcome.clock_started_at,
        smoke=smoke_obs,
        data=_data_obs(outcome.reconciliation),
        after_failback=_data_obs(outcome.after_failback),
        aborted=aborted,
        rollback=judge.PhaseObservation(rollback.name, rollback.status, rollback.message)
        if rollback is not None else None,
        canary=canary,
    )


def _data_obs(rec: Reconciliation | None) -> judge.DataObservation | None:
    if rec is None:
        return None
    return judge.DataObservation(
        acknowledged=rec.acked_count, present=rec.present_count, lost=rec.lost_count,
        rpo_s=rec.rpo_s, ledger_balanced=rec.ledger_balanced)


def apply(outcome: OutcomeBuilder, j: judge.Judgement, listener: DrillListener, *,
          announce: bool = True) -> None:
    """The judgement into the outcome: verdict, reasons, findings, what was observed, RTO."""
    outcome.verdict = j.verdict
    outcome.reasons += list(j.reasons)
    outcome.findings += list(j.findings)
    outcome.observed = list(j.observed)
    outcome.missing = list(j.missing)
    if j.rto_s is not None and j.clock_stopped_at is not None:
        outcome.rto_s = j.rto_s
        outcome.clock_stopped_at = j.clock_stopped_at
        if announce:
            listener.clock_stopped(j.clock_stopped_at, j.rto_s)


def _rollback(plan: Plan, tgt: Target, scenario: Scenario, outcome: OutcomeBuilder,
              extravars: dict[str, Any], listener: DrillListener, run_dir: Path,
              runner: PlaybookRunner | None = None) -> PhaseResult | None:
    """Bring payments back whatever state the phases left. Never cancelled itself."""
    if not scenario.rollback:
        listener.note("no rollback playbook in the plan: the environment is left as it is")
        return None
    listener.note("rolling back: restoring service")
    rb = Phase(name="rollback", playbook=scenario.rollback)
    results, _ = _run_phases(plan, tgt, [rb], label="rollback", run_dir=run_dir,
                             extravars=extravars, check=False, listener=listener,
                             cancel=CancelToken(), runner=runner)
    return results[0]


def _write_summary(run_dir: Path, outcome: DrillOutcome) -> None:
    _atomic_json(run_dir / "summary.json", outcome.to_json())


def _atomic_json(path: Path, data: Any) -> None:
    from drkit.files import atomic_write

    atomic_write(path, json.dumps(data, indent=2, default=str).encode("utf-8"))


def check(plan: Plan, env_name: str, scenario_name: str | None = None,
          listener: DrillListener | None = None,
          runner: PlaybookRunner | None = None) -> DrillOutcome:
    """The daily readiness check: the scenario's first phase (preflight) alone."""
    name = scenario_name or next(iter(plan.model.scenarios), None)
    if name is None:
        raise BadInput(f"{plan.path.name}: no scenarios declared")
    return run_drill(plan, name, env_name,
                     options=DrillOptions(preflight_only=True, failback=False),
                     listener=listener, runner=runner)


def find_run(plan: Plan, run_id: str) -> Path:
    """The run directory of `run_id`, in any environment's state directory."""
    # Matched literally, never as a glob: `drill resume '*'` matched the runs folder's first
    # entry (issue 16). A run id is 20250101T000000Z-abc123 (or a prefix of one).
    if not re.fullmatch(r"[0-9A-Za-z][0-9A-Za-z_-]{0,127}", run_id or ""):
        raise BadInput(f"{run_id!r} is not a drill run id (see `drkit evidence list`)")
    roots = []
    for name in plan.model.environments:
        try:
            roots.append(target(plan, name).state_dir / "runs")
        except DrkitError:
            continue
    for root in dict.fromkeys(roots):
        for found in sorted(root.iterdir()) if root.is_dir() else []:
            if found.name.startswith(run_id) and found.is_dir():
                return found
    raise BadInput(f"no drill run {run_id!r} here (its directory is under the environment's "
                   "state directory, runs/; the id is in the drill's output and evidence)")


def resume(plan: Plan, run_id: str, *, options: DrillOptions | None = None,
           listener: DrillListener | None = None, cancel: CancelToken | None = None,
           runner: PlaybookRunner | None = None) -> DrillOutcome:
    """Continue an interrupted or failed drill from its first unfinished phase, under a new
    evidence record linked to the first, with the recovery clock counting from the original
    fault. The phases it finished are re-checked first (the scenario's `holds` playbook)."""
    run_dir = find_run(plan, run_id)
    summary = run_dir / "summary.json"
    source = summary if summary.is_file() else run_dir / "progress.json"
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BadInput(f"{source}: cannot read the run's progress: {e}") from None
    if data.get("verdict") == "pass":
        raise BadInput(f"drill {run_id} passed: there is nothing to resume")
    phases = []
    for p in data.get("phases") or []:
        if p.get("name") in ("rollback", "holds"):
            continue
        st = p.get("status")
        if st != "ok":
            break
        phases.append(PhaseResult(p["name"], PhaseStatus.OK, _parse_ts(p["started_at"]),
                                  _parse_ts(p["ended_at"]) if p.get("ended_at") else None))
    rolled_back = any(p.get("name") == "rollback" for p in data.get("phases") or [])
    if rolled_back:
        raise BadInput(f"drill {run_id} was rolled back after it stopped: nothing of it holds "
                       "any more; run a new drill")
    clock = data.get("clock_started_at") or (data.get("rto") or {}).get("clock_started_at")
    state = Resume(run_id=data.get("id", run_id),
                   evidence_id=(data.get("evidence") or {}).get("id"), done=tuple(phases),
                   clock_started_at=_parse_ts(clock) if clock else None)
    from dataclasses import replace as _replace

    return run_drill(plan, data["scenario"], data["environment"],
                     options=_replace(options or DrillOptions(), resume=state),
                     listener=listener, cancel=cancel, runner=runner)




def recover(plan: Plan, env_name: str, scenario_name: str | None = None, *,
            listener: DrillListener | None = None,
            runner: PlaybookRunner | None = None) -> Recovery:
    """After a drill was killed: seal its evidence as interrupted, then run the scenario's
    rollback (it reads the state of both regions first) so payments are served again from the
    original primary, with replication re-established, or its absence reported."""
    listener = listener or DrillListener()
    tgt = target(plan, env_name)
    # The killed drill's own scenario by default: its rollback knows what that scenario changed
    # (issue 17: the partition's heals the region and stops the in-region client).
    name = (scenario_name or _killed_scenario(plan, env_name, tgt.state_dir) or
            next(iter(plan.model.scenarios), None))
    if name is None:
        raise BadInput(f"{plan.path.name}: no scenarios declared")
    scenario = plan.scenario(name)
    if not scenario.rollback:
        raise BadInput(f"scenario {name!r} has no rollback playbook to recover with")
    sealed: tuple[str, ...] = ()
    from drkit import envlock
    from drkit.drill import shared

    # issue 18: the shared lease too (a live drill elsewhere refuses the recovery; an expired
    # one, its driver killed, is taken over with the next fencing token).
    with envlock.hold(tgt.state_dir, env_name, f"drill recover --scenario {name}",
                      key=envlock.key_for(plan, env_name), drill=True,
                      on_takeover=listener.note), \
            shared.shared_lease(plan, env_name, f"drill recover --scenario {name}",
                                f"{new_run_id()}-recover"):
        try:
            from drkit import evidence

            store = evidence.open_store(plan.model.evidence.store, plan=plan)
            sealed = tuple(r.id for r in evidence.recover_interrupted(store, plan=plan).sealed)
        except DrkitError as e:
            listener.note(f"evidence not recovered: {e}")
        # The killed run's private ansible-runner folder (its environment, extra vars) goes.
        for gone in engine.remove_abandoned_private_dirs():
            listener.note(f"removed the temporary folder of a killed run: {gone}")
        run_dir = tgt.state_dir / "runs" / f"{new_run_id()}-recover"
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # evidence too (issue 15)
        extravars = {**tgt.extravars, "drkit_run_id": run_dir.name, "drkit_python": _python()}
        results, _ = _run_phases(plan, tgt, [Phase(name="recover", playbook=scenario.rollback)],
                                 label="recover", run_dir=run_dir, extravars=extravars,
                                 check=False, listener=listener, cancel=CancelToken(),
                                 runner=runner)
        if plan.environment(env_name).lab and results[0].status == PhaseStatus.OK:
            from drkit import lab

            # Back in its original topology, the lab restarts whatever else died (idempotent).
            try:
                lab.up(plan)
            except DrkitError as e:
                listener.note(f"lab up after recovery: {e}")
    return _recovery_status(plan, env_name, tgt, tuple(results), sealed)


def _killed_scenario(plan: Plan, env_name: str, state_dir: Path) -> str | None:
    """The scenario of the drill that died half way on this environment, if the plan has it."""
    from drkit import envlock

    mark = envlock.drill_mark(state_dir, envlock.key_for(plan, env_name))
    if mark is None or not mark.unfinished:
        return None
    words = mark.command.split()
    if len(words) >= 3 and words[:2] in (["drill", "run"], ["drill", "resume"]) and \
            words[2] in plan.model.scenarios:
        return words[2]
    return None


def _recovery_status(plan: Plan, env_name: str, tgt: Target, phases: tuple[PhaseResult, ...],
                     sealed: tuple[str, ...]) -> Recovery:
    serving, active, replication = False, None, "unknown"
    if tgt.entry_url and tgt.flow_pack is not None:
        from drkit import flows

        try:
            # Serving: the flows the plan's services name, as its flow pack declares them.
            results = flows.run_smoke(tgt.entry_url, tgt.ca_file,
                                      plan.smoke_flows(env_name, plan.model.services),
                                      token=tgt.api_token, pack=tgt.pack())
            serving = all(str(r.status) == "pass" for r in results)
        except DrkitError:
            serving = False
    if plan.environment(env_name).lab:
        from drkit import lab

        st = lab.status(plan)
        active = st.active_region
        standby = next((c for c in st.components if c.kind == "postgres" and
                        "standby" in c.detail), None)
        replication = "streaming" if standby and "streaming" in standby.detail else (
            f"not streaming ({standby.detail})" if standby else "no standby")
    ok = phases and phases[0].status == PhaseStatus.OK
    message = ("serving payments" if serving else "NOT serving payments") + (
        f" from {active}" if active else "") + f"; replication {replication}" + (
        "" if ok else f"; recovery playbook failed: {phases[0].message if phases else '?'}")
    return Recovery(env_name, serving, active, replication, phases, sealed, message)



def _iso(d: datetime) -> str:
    return d.isoformat().replace("+00:00", "Z")
