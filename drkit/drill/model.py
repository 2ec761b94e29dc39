"""The drill's domain values and its observer: what a run is asked to do (`DrillOptions`), what
it observed (`PhaseResult`, `SmokeRun`, `DrillOutcome`, `Recovery`), gates, resume points, the
listener hooks and the cancel token. Every value is frozen; `OutcomeBuilder` is the one thing
a run fills in, and it hands out frozen `DrillOutcome`s. No I/O here."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from drkit import engine
from drkit.drill.judge import Finding, PhaseStatus, Verdict

if TYPE_CHECKING:
    from drkit.flows import FlowResult, Reconciliation


class PlaybookRunner(Protocol):
    """Runs one playbook and returns its result: `engine.run_playbook` implements it; tests of
    the drill's decisions pass a fake (the seam of issue 11), the lab tests the real one."""

    def __call__(self, playbook: Path, *, inventory: Path, content_root: Path,
                 extravars: dict[str, Any] | None = ..., artifacts_dir: Path,
                 check: bool = ..., listener: engine.RunListener | None = ...,
                 cancel: Callable[[], bool] | None = ...,
                 envvars: dict[str, str] | None = ...) -> engine.RunResult: ...


@dataclass(frozen=True)
class PhaseResult:
    name: str
    status: PhaseStatus
    started_at: datetime | None
    ended_at: datetime | None
    tasks: tuple[engine.TaskResult, ...] = ()
    message: str = ""
    # False: the run never started this phase although nothing before it stopped it
    # (ansible-playbook died first, a playbook error). Said as a value, not read back from the
    # message (issue 13); the judge makes it `error`, never skipped.
    reached: bool = True

    @property
    def duration_s(self) -> float:
        if self.started_at is None or self.ended_at is None:
            return 0.0
        return round((self.ended_at - self.started_at).total_seconds(), 3)

    @property
    def changed(self) -> int:
        return sum(1 for t in self.tasks if t.status == "changed")

    @property
    def postconditions(self) -> tuple[str, ...]:
        """The checks of its own effect the phase ran and saw hold (its passed asserts)."""
        return tuple(t.task for t in self.tasks
                     if t.action.endswith("assert") and t.status in ("ok", "changed"))


@dataclass(frozen=True)
class Targets:
    rto_s: float
    rpo_s: float


@dataclass(frozen=True)
class DrillOptions:
    dry_run: bool = False
    failback: bool = True
    preflight_only: bool = False
    smoke_timeout_s: float | None = None
    canary_rate: float = 20.0
    confirm: str | None = None
    operator: str | None = None
    change_id: str | None = None
    request: str | None = None  # an approved request id (four eyes), when the plan needs one
    override_blackout: str | None = None  # the reason to run inside a blackout window
    store: str | None = None  # evidence store URL; default: the plan's
    evidence: bool = True
    # Manual gates: asked before a phase marked `gate: true`. On a terminal the CLI passes a
    # function that asks the operator; unattended, --approve-gates (with an approved request).
    gate: Callable[[GateRequest], GateDecision] | None = None
    approve_gates: bool = False
    resume: Resume | None = None  # continue an interrupted or failed drill (drkit drill resume)
    # issue 18: the run id the controller chose (a driver started on a node keeps it), and
    # whether this process is that driver (its playbooks run here, not streamed to the node)
    run_id: str | None = None
    on_node: bool = False


@dataclass(frozen=True)
class GateRequest:
    """What a gate shows the operator: what happened so far and what comes next."""

    phase: str
    done: tuple[PhaseResult, ...]
    next_phases: tuple[str, ...]


@dataclass(frozen=True)
class GateDecision:
    phase: str
    approved: bool
    by: str
    at: datetime
    how: str  # terminal, --approve-gates, refused

    def to_json(self) -> dict[str, Any]:
        return {"phase": self.phase, "approved": self.approved, "by": self.by,
                "at": self.at.isoformat().replace("+00:00", "Z"), "how": self.how}


@dataclass(frozen=True)
class Resume:
    """Where an earlier run stopped: the phases it finished and when its fault happened."""

    run_id: str
    evidence_id: str | None
    done: tuple[PhaseResult, ...]
    clock_started_at: datetime | None


@dataclass(frozen=True)
class CanaryFigures:
    """What the RPO canary did during the drill (its reconciliation is measured separately)."""

    rate_per_s: float
    acknowledged: int
    failed_attempts: int

    def to_json(self) -> dict[str, Any]:
        return {"rate_per_s": self.rate_per_s, "acknowledged": self.acknowledged,
                "failed_attempts": self.failed_attempts}


@dataclass(frozen=True)
class ResumedFrom:
    """The run a resumed drill continues, and its evidence record."""

    run_id: str
    evidence_id: str | None

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "evidence_id": self.evidence_id}


@dataclass(frozen=True)
class Published:
    """JSON a phase playbook published with set_stats whose shape is the scenario's own (the
    preflight's readiness facts, `drkit_preflight`): reported as published, never decided on.
    Kept as JSON text, so nothing can change it after the run."""

    text: str

    @classmethod
    def of(cls, data: Any) -> Published:
        return cls(json.dumps(data, default=str))

    def to_json(self) -> Any:
        return json.loads(self.text)


@dataclass(frozen=True)
class SmokeRun:
    """What the smoke step published (drkit.dr.smoke's `drkit_smoke`): each flow's result as
    seen through `entry`, and the end of the first all-green round (None: there was none)."""

    entry: str | None
    green_at: datetime | None
    results: tuple[FlowResult, ...]

    @classmethod
    def published(cls, data: Any) -> SmokeRun | None:
        """Parsed from the published JSON; None when it holds no list of results. A flow the
        round never ran is the action's `not_reached` list (issue 13), never a reading of the
        detail's words."""
        from drkit.flows import FlowResult, FlowStatus

        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            return None
        skipped = data.get("not_reached")
        not_reached = {str(f) for f in skipped} if isinstance(skipped, list) else set()
        results = tuple(
            FlowResult(str(r.get("flow")),
                       FlowStatus.PASS if r.get("status") == "pass" else FlowStatus.FAIL,
                       float(r.get("duration_s") or 0.0), str(r.get("detail") or ""),
                       reached=str(r.get("flow")) not in not_reached)
            for r in data["results"] if isinstance(r, dict))
        green = data.get("green_at")
        try:
            green_at = _parse_ts(green) if isinstance(green, str) and green else None
        except ValueError:
            green_at = None  # not a time: no all-green moment was observed
        entry = data.get("entry")
        return cls(str(entry) if entry else None, green_at, results)


def _parse_ts(value: str) -> datetime:
    d = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return d if d.tzinfo else d.replace(tzinfo=UTC)


@dataclass(frozen=True)
class DrillOutcome:
    """What a drill observed and decided, frozen: listeners, the run folder's summary, the
    evidence and the caller get it from the run's `OutcomeBuilder`."""

    id: str
    scenario: str
    environment: str
    verdict: Verdict
    started_at: datetime
    ended_at: datetime
    targets: Targets
    phases: tuple[PhaseResult, ...]
    dry_run: bool = False
    rto_s: float | None = None
    clock_started_at: datetime | None = None
    clock_stopped_at: datetime | None = None
    # How each end of the clock was obtained, in words, for the auditor (issue 19): the fault
    # step's own time or the phase start it fell back to; the smoke round that went green.
    clock_started_source: str | None = None
    clock_stopped_source: str | None = None
    # The canary's first failed request after the fault phase started: (sent, failed).
    canary_first_failure: tuple[datetime, datetime] | None = None
    rpo_s: float | None = None
    lost_payments: int | None = None
    smoke: tuple[FlowResult, ...] = ()
    reconciliation: Reconciliation | None = None
    after_failback: Reconciliation | None = None
    canary: CanaryFigures | None = None
    preflight: Published | None = None
    findings: tuple[Finding, ...] = ()
    reasons: tuple[str, ...] = ()
    observed: tuple[str, ...] = ()  # what the verdict rests on, in words
    warnings: tuple[str, ...] = ()  # e.g. a listener switched off
    missing: tuple[str, ...] = ()  # what it needed and did not observe
    evidence_id: str | None = None
    # sealing's warnings (anchor or time stamp not obtained, key not pinned): the record is sealed
    evidence_warnings: tuple[str, ...] = ()
    artifacts_dir: Path | None = None
    gates: tuple[GateDecision, ...] = ()
    resumed_from: ResumedFrom | None = None

    @property
    def exit_code(self) -> int:
        return self.verdict.exit_code

    @property
    def rto_met(self) -> bool | None:
        return None if self.rto_s is None else self.rto_s <= self.targets.rto_s

    @property
    def rpo_met(self) -> bool | None:
        if self.rpo_s is None:
            return None
        return self.rpo_s <= self.targets.rpo_s and not (
            self.targets.rpo_s == 0 and (self.lost_payments or 0) > 0)

    def to_json(self) -> dict[str, Any]:
        def ts(d: datetime | None) -> str | None:
            return d.isoformat().replace("+00:00", "Z") if d else None

        return {
            "id": self.id,
            "scenario": self.scenario,
            "environment": self.environment,
            "verdict": str(self.verdict),
            "dry_run": self.dry_run,
            # The run folder: summary, progress, each phase's artifacts, and vars.yml.
            "artifacts_dir": str(self.artifacts_dir) if self.artifacts_dir else None,
            "reasons": list(self.reasons),
            "observed": list(self.observed),
            "missing": list(self.missing),
            "warnings": list(self.warnings),
            "started_at": ts(self.started_at),
            "ended_at": ts(self.ended_at),
            "rto": {"target_s": self.targets.rto_s, "actual_s": self.rto_s,
                    "met": self.rto_met,
                    "clock_started_at": ts(self.clock_started_at),
                    "clock_stopped_at": ts(self.clock_stopped_at),
                    "clock_started_source": self.clock_started_source,
                    "clock_stopped_source": self.clock_stopped_source,
                    "canary_first_failure_sent_at": ts(self.canary_first_failure[0])
                    if self.canary_first_failure else None,
                    "canary_first_failure_at": ts(self.canary_first_failure[1])
                    if self.canary_first_failure else None},
            "rpo": {"target_s": self.targets.rpo_s, "actual_s": self.rpo_s,
                    "met": self.rpo_met, "lost_payments": self.lost_payments},
            "phases": [
                {"name": p.name, "status": str(p.status), "started_at": ts(p.started_at),
                 "duration_s": p.duration_s, "changed": p.changed, "message": p.message,
                 "postconditions": list(p.postconditions),
                 "tasks": [_task_json(t) for t in p.tasks]}
                for p in self.phases
            ],
            "smoke": [r.to_json() for r in self.smoke],
            "reconciliation": self.reconciliation.to_json() if self.reconciliation else None,
            "after_failback": self.after_failback.to_json() if self.after_failback else None,
            "canary": self.canary.to_json() if self.canary else None,
            "preflight": self.preflight.to_json() if self.preflight is not None else None,
            "findings": [asdict(f) for f in self.findings],
            "evidence": {"id": self.evidence_id} if self.evidence_id else None,
            "evidence_warnings": list(self.evidence_warnings),
            "gates": [g.to_json() for g in self.gates],
            "resumed_from": self.resumed_from.to_json() if self.resumed_from else None,
        }


def _task_json(t: engine.TaskResult) -> dict[str, Any]:
    return {"task": t.task, "host": t.host, "status": t.status,
            "started_at": t.started_at.isoformat().replace("+00:00", "Z"),
            "ended_at": t.ended_at.isoformat().replace("+00:00", "Z"),
            "duration_s": round(t.duration_s, 3), "message": t.message}


@dataclass
class OutcomeBuilder:
    """The outcome while its drill runs: the drill is its only writer (phases end, the judge
    decides, the evidence recorder seals), and `build()` hands out the frozen `DrillOutcome`
    that listeners, the summary and the caller get. Fields as DrillOutcome's, lists where it
    has tuples (tests/drill/test_model.py keeps the two in step)."""

    id: str
    scenario: str
    environment: str
    started_at: datetime
    targets: Targets
    dry_run: bool = False
    artifacts_dir: Path | None = None
    verdict: Verdict = Verdict.FAIL
    ended_at: datetime | None = None  # None: still running (built as the start)
    phases: list[PhaseResult] = field(default_factory=list)
    rto_s: float | None = None
    clock_started_at: datetime | None = None
    clock_stopped_at: datetime | None = None
    clock_started_source: str | None = None
    clock_stopped_source: str | None = None
    canary_first_failure: tuple[datetime, datetime] | None = None
    rpo_s: float | None = None
    lost_payments: int | None = None
    smoke: tuple[FlowResult, ...] = ()
    reconciliation: Reconciliation | None = None
    after_failback: Reconciliation | None = None
    canary: CanaryFigures | None = None
    preflight: Published | None = None
    findings: list[Finding] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    observed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    evidence_id: str | None = None
    evidence_warnings: list[str] = field(default_factory=list)
    gates: list[GateDecision] = field(default_factory=list)
    resumed_from: ResumedFrom | None = None

    def build(self) -> DrillOutcome:
        return DrillOutcome(
            id=self.id, scenario=self.scenario, environment=self.environment,
            verdict=self.verdict, started_at=self.started_at,
            ended_at=self.ended_at or self.started_at, targets=self.targets,
            phases=tuple(self.phases), dry_run=self.dry_run, rto_s=self.rto_s,
            clock_started_at=self.clock_started_at, clock_stopped_at=self.clock_stopped_at,
            clock_started_source=self.clock_started_source,
            clock_stopped_source=self.clock_stopped_source,
            canary_first_failure=self.canary_first_failure, rpo_s=self.rpo_s,
            lost_payments=self.lost_payments, smoke=self.smoke,
            reconciliation=self.reconciliation, after_failback=self.after_failback,
            canary=self.canary, preflight=self.preflight, findings=tuple(self.findings),
            reasons=tuple(self.reasons), observed=tuple(self.observed),
            warnings=tuple(self.warnings), missing=tuple(self.missing),
            evidence_id=self.evidence_id, evidence_warnings=tuple(self.evidence_warnings),
            artifacts_dir=self.artifacts_dir, gates=tuple(self.gates),
            resumed_from=self.resumed_from)


class DrillListener:
    """Observer of a drill. Every hook does nothing by default."""

    def drill_started(self, run_id: str, scenario: str, environment: str,  # noqa: B027
                      targets: Targets, phases: Sequence[str]) -> None:
        pass

    def phase_started(self, name: str, at: datetime) -> None:  # noqa: B027
        pass

    def phase_finished(self, result: PhaseResult) -> None:  # noqa: B027
        pass

    def task_finished(self, phase: str, result: engine.TaskResult) -> None:  # noqa: B027
        pass

    def clock_started(self, at: datetime) -> None:  # noqa: B027
        """The fault phase started (live, as it happens): the recovery clock runs."""

    def clock_stopped(self, at: datetime, rto_s: float) -> None:  # noqa: B027
        """Every smoke flow passed at `at` (known once the recovery run ends)."""

    def note(self, message: str) -> None:  # noqa: B027
        """A warning or a step outside the playbooks (lock taken over, rollback started)."""

    def drill_finished(self, outcome: DrillOutcome) -> None:  # noqa: B027
        pass


class CancelToken:
    """Set by the CLI's signal handlers; the running phase stops and rollback runs."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def cancel(self, reason: str) -> None:
        self.reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass(frozen=True)
class Recovery:
    environment: str
    serving: bool
    active_region: str | None
    replication: str
    phases: tuple[PhaseResult, ...]
    sealed_interrupted: tuple[str, ...]
    message: str

    @property
    def exit_code(self) -> int:
        if not self.serving:
            return 3
        # Serving is observed, but a recovery playbook that failed did not finish its work
        # (replication, the old primary): that is not a clean recovery, whatever status says.
        played = bool(self.phases) and all(p.status == PhaseStatus.OK for p in self.phases)
        return 0 if played and self.replication == "streaming" else 1

    def to_json(self) -> dict[str, Any]:
        return {"environment": self.environment, "serving": self.serving,
                "active_region": self.active_region, "replication": self.replication,
                "phases": [{"name": p.name, "status": str(p.status),
                            "duration_s": p.duration_s, "message": p.message}
                           for p in self.phases],
                "sealed_interrupted": list(self.sealed_interrupted), "message": self.message}
