"""Which services are drilled enough: the compliance view across drills.

Pure logic over drill summaries (`DrillSummary`), with "now" as a parameter so a test, or an
auditor asking "what did this look like on 31 March?", chooses the date. The plan's policy says
how often each tier needs a PASSING drill (`policy.drill_every`, e.g. tier 1: 90d). A service is

- `never-drilled` (overdue) when no passing drill covers it,
- `failed` when the last drill that covered it did not pass (fail, aborted, interrupted),
- `overdue` when its last passing drill is older than its tier's interval,
- `ok` otherwise, or `no-policy` when the policy has no interval for its tier.

Drill summaries come from the evidence store (`drill_summaries`): the index lists sealed
drill records, and each record holds per-service targets and measurements and the findings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from drkit.config import Plan, PlanModel


def _ts(value: datetime | str | None) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


@dataclass(frozen=True)
class ServiceResult:
    """What one drill measured for one service, against that service's targets."""

    service: str
    rto_target_s: float | None = None
    rto_s: float | None = None
    rpo_target_s: float | None = None
    rpo_s: float | None = None
    lost_payments: int | None = None

    @property
    def rto_met(self) -> bool | None:
        if self.rto_s is None or self.rto_target_s is None:
            return None
        return self.rto_s <= self.rto_target_s

    @property
    def rpo_met(self) -> bool | None:
        if self.rpo_s is None or self.rpo_target_s is None:
            return None
        return self.rpo_s <= self.rpo_target_s


@dataclass(frozen=True)
class DrillSummary:
    """One drill as status and report need it (built from an evidence record or an outcome)."""

    id: str
    scenario: str
    environment: str
    verdict: str  # pass, fail, aborted, interrupted
    started_at: datetime
    ended_at: datetime | None
    results: tuple[ServiceResult, ...]
    findings: tuple[str, ...] = ()  # "high rto:payments: measured RTO 42s exceeds ..."
    seq: int | None = None

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(r.service for r in self.results)

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    @property
    def at(self) -> datetime:
        """When the drill counts as done: its end, or its start if it never ended."""
        return self.ended_at or self.started_at

    @property
    def rto_s(self) -> float | None:
        got = [r.rto_s for r in self.results if r.rto_s is not None]
        return max(got) if got else None

    @property
    def rto_target_s(self) -> float | None:
        got = [r.rto_target_s for r in self.results if r.rto_target_s is not None]
        return min(got) if got else None

    @property
    def rpo_s(self) -> float | None:
        got = [r.rpo_s for r in self.results if r.rpo_s is not None]
        return max(got) if got else None

    @property
    def rpo_target_s(self) -> float | None:
        got = [r.rpo_target_s for r in self.results if r.rpo_target_s is not None]
        return min(got) if got else None

    @property
    def lost_payments(self) -> int | None:
        got = [r.lost_payments for r in self.results if r.lost_payments is not None]
        return max(got) if got else None

    def result(self, service: str) -> ServiceResult | None:
        return next((r for r in self.results if r.service == service), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "seq": self.seq, "scenario": self.scenario,
            "environment": self.environment, "verdict": self.verdict,
            "started_at": iso(self.started_at), "ended_at": iso(self.ended_at),
            "services": list(self.services),
            "rto": {"target_s": self.rto_target_s, "actual_s": self.rto_s},
            "rpo": {"target_s": self.rpo_target_s, "actual_s": self.rpo_s,
                    "lost_payments": self.lost_payments},
            "findings": list(self.findings),
        }


def summary_from_outcome(outcome: Mapping[str, Any], services: Sequence[str]) -> DrillSummary:
    """A DrillSummary from a drill's JSON outcome (DrillOutcome.to_json()) and its services."""
    rto = outcome.get("rto") or {}
    rpo = outcome.get("rpo") or {}
    evidence = outcome.get("evidence") or {}
    started = _ts(outcome.get("started_at"))
    if started is None:
        raise ValueError("the outcome has no started_at")
    return DrillSummary(
        id=str(evidence.get("id") or outcome.get("id") or "?"),
        scenario=str(outcome.get("scenario") or "?"),
        environment=str(outcome.get("environment") or "?"),
        verdict=str(outcome.get("verdict") or "fail"),
        started_at=started, ended_at=_ts(outcome.get("ended_at")),
        results=tuple(ServiceResult(s, rto.get("target_s"), rto.get("actual_s"),
                                    rpo.get("target_s"), rpo.get("actual_s"),
                                    rpo.get("lost_payments")) for s in services),
        findings=tuple(f"{f.get('severity', 'medium')} {f.get('check', '?')}: "
                       f"{f.get('message') or f.get('detail') or ''}".rstrip(": ")
                       for f in outcome.get("findings") or () if isinstance(f, Mapping)),
    )


# --------------------------------------------------------------------------- the evidence door


def drill_summaries(plan: Plan, store: str | None = None) -> list[DrillSummary]:
    """Every sealed drill record of the plan's evidence store (or `store`), oldest first.

    Read-only on purpose: a CI compliance gate runs without the signing key, so it does not
    seal the records of interrupted runs (those are not in the index until someone does).
    """
    from drkit.evidence import load_record, open_store, read_index, select

    st = open_store(store, plan=plan)
    out = []
    for entry in select(read_index(st), kind="drill"):
        rec = load_record(st, entry.id)
        results = tuple(
            ServiceResult(t.service, _s(t.rto_target_ms), _s(t.rto_measured_ms),
                          _s(t.rpo_target_ms), _s(t.rpo_measured_ms), t.lost_payments)
            for t in rec.targets)
        if not results and rec.name in plan.model.scenarios:
            # A record without targets still covers its scenario's services.
            results = tuple(ServiceResult(s) for s in plan.model.scenarios[rec.name].services)
        started = _ts(rec.started_at)
        assert started is not None
        out.append(DrillSummary(
            id=rec.id, seq=rec.seq, scenario=rec.name, environment=rec.environment,
            verdict=str(rec.verdict), started_at=started, ended_at=_ts(rec.ended_at),
            results=results,
            findings=tuple(f"{f.severity} {f.check}: {f.detail}".rstrip(": ")
                           for f in rec.findings)))
    out.sort(key=lambda d: (d.started_at, d.seq or 0))
    return out


def _s(v: int | None) -> float | None:
    return None if v is None else v / 1000


# --------------------------------------------------------------------------- the status


class State(StrEnum):
    OK = "ok"
    OVERDUE = "overdue"
    FAILED = "failed"
    NEVER = "never-drilled"
    NO_POLICY = "no-policy"


@dataclass(frozen=True)
class ServiceStatus:
    service: str
    tier: int
    owner: str
    interval_s: float | None  # the policy's "a passing drill every ..."; None: no policy
    rto_target_s: float
    rpo_target_s: float
    last: DrillSummary | None  # the last drill covering the service, whatever its verdict
    last_pass: DrillSummary | None
    next_due: datetime | None
    overdue: bool
    last_failed: bool

    @property
    def state(self) -> State:
        if self.last_failed:
            return State.FAILED
        if self.interval_s is None:
            return State.NO_POLICY
        if self.last_pass is None:
            return State.NEVER
        return State.OVERDUE if self.overdue else State.OK

    @property
    def compliant(self) -> bool:
        return not (self.overdue or self.last_failed)

    @property
    def reason(self) -> str:
        s = self.state
        if s == State.FAILED and self.last is not None:
            return f"the last drill ({self.last.id}) did not pass: {self.last.verdict}"
        if s == State.NEVER:
            return "no passing drill on record"
        if s == State.OVERDUE and self.next_due is not None:
            return f"a passing drill was due by {iso(self.next_due)}"
        if s == State.NO_POLICY:
            return f"policy.drill_every has no interval for tier {self.tier}"
        return f"next drill due by {iso(self.next_due)}"

    def to_json(self) -> dict[str, Any]:
        last = self.last
        result = last.result(self.service) if last else None
        return {
            "service": self.service, "tier": self.tier, "owner": self.owner,
            "state": str(self.state), "compliant": self.compliant, "overdue": self.overdue,
            "last_failed": self.last_failed, "reason": self.reason,
            "drill_every_s": self.interval_s,
            "last_drill": None if last is None else {
                "id": last.id, "scenario": last.scenario, "environment": last.environment,
                "verdict": last.verdict, "at": iso(last.at)},
            "last_pass": None if self.last_pass is None else {
                "id": self.last_pass.id, "at": iso(self.last_pass.at)},
            "next_due": iso(self.next_due),
            "rto": {"target_s": self.rto_target_s,
                    "actual_s": result.rto_s if result else None},
            "rpo": {"target_s": self.rpo_target_s,
                    "actual_s": result.rpo_s if result else None,
                    "lost_payments": result.lost_payments if result else None},
        }


@dataclass(frozen=True)
class StatusReport:
    now: datetime
    environment: str | None  # only drills in this environment count; None: any
    services: tuple[ServiceStatus, ...]

    @property
    def ok(self) -> bool:
        return all(s.compliant for s in self.services)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def to_json(self) -> dict[str, Any]:
        return {"now": iso(self.now), "environment": self.environment, "ok": self.ok,
                "services": [s.to_json() for s in self.services]}


def compute(model: PlanModel, drills: Iterable[DrillSummary], *, now: datetime,
            environment: str | None = None) -> StatusReport:
    """The status of every service of the plan as of `now`.

    Drills that started after `now` are ignored (the view as of a past date). With
    `environment`, only drills in that environment count: a lab drill does not prove that
    production recovers.
    """
    now = _ts(now) or datetime.now(UTC)
    relevant = sorted((d for d in drills
                       if d.started_at <= now
                       and (environment is None or d.environment == environment)),
                      key=lambda d: (d.at, d.seq or 0))
    out = []
    for name, svc in model.services.items():
        covering = [d for d in relevant if name in d.services]
        last = covering[-1] if covering else None
        last_pass = next((d for d in reversed(covering) if d.passed), None)
        interval = model.policy.drill_every.get(svc.tier)
        next_due = (last_pass.at + timedelta(seconds=interval)
                    if last_pass is not None and interval is not None else None)
        overdue = interval is not None and (next_due is None or now > next_due)
        out.append(ServiceStatus(
            service=name, tier=svc.tier, owner=svc.owner, interval_s=interval,
            rto_target_s=svc.rto, rpo_target_s=svc.rpo, last=last, last_pass=last_pass,
            next_due=next_due, overdue=overdue,
            last_failed=last is not None and not last.passed))
    return StatusReport(now=now, environment=environment, services=tuple(out))


def status(plan: Plan, *, now: datetime | None = None, environment: str | None = None,
           store: str | None = None) -> StatusReport:
    """`compute` over the plan's evidence store: what `drkit status` shows."""
    if environment is not None:
        plan.environment(environment)  # an unknown name is a typo, not "never drilled"
    return compute(plan.model, drill_summaries(plan, store), now=now or datetime.now(UTC),
                   environment=environment)


__all__ = ["DrillSummary", "ServiceResult", "ServiceStatus", "State", "StatusReport", "compute",
           "drill_summaries", "iso", "status", "summary_from_outcome"]
