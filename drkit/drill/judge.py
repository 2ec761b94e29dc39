"""The verdict of a drill, a readiness check or a dry run: a pure function of what was observed.

`judge(Observations) -> Judgement`. Nothing here runs anything, reads a clock or a file: the
drill collects typed, frozen observations (each phase's status and the postconditions it
checked, each smoke flow as seen through the target's entry point and the moment they were all
green, the canary's reconciliation, the recovery clock's start) and this module decides.

The rules (issue 11, "every green is earned"):

- a phase that did not run, or whose effect was not observed, is `error`, never ok or skipped;
- PASS needs every phase ok (checked, in a dry run), every smoke flow observed green, the
  recovery clock stopped by that observed green (never by the end of a phase), and RPO measured
  wherever the plan sets an RPO target;
- anything the verdict needs that was not observed makes it `inconclusive` (exit 1), naming what
  is missing; anything observed that misses a target makes it `fail`; a run that could not go on
  (cancelled, Ansible killed) is `aborted`. Precedence: aborted > fail > inconclusive > pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"  # something the verdict needs was not observed
    ABORTED = "aborted"

    @property
    def exit_code(self) -> int:
        return {Verdict.PASS: 0, Verdict.FAIL: 1, Verdict.INCONCLUSIVE: 1,
                Verdict.ABORTED: 3}[self]


class PhaseStatus(StrEnum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"  # not reached after an earlier failure, or left out (--no-failback)
    CANCELED = "canceled"
    # The phase did not run although nothing before it failed (ansible-playbook died before its
    # first play, a playbook error, an unknown module), or its effect was not observed.
    ERROR = "error"
    CHECKED = "checked"  # --dry-run: ran in check mode


class Mode(StrEnum):
    DRILL = "drill"
    DRY_RUN = "dry-run"  # every phase in check mode
    CHECK = "check"  # readiness: the first phase (preflight) alone, for real


@dataclass(frozen=True)
class Finding:
    check: str
    severity: str  # high, medium, low
    message: str


@dataclass(frozen=True)
class PhaseObservation:
    name: str
    status: PhaseStatus
    message: str = ""
    # Postconditions the phase checked and saw hold (the names of its passed checks).
    postconditions: tuple[str, ...] = ()
    failback: bool = False  # after the clock: returns to the original primary
    # False: it never started although nothing before it stopped it (Ansible died first).
    reached: bool = True


@dataclass(frozen=True)
class FlowObservation:
    flow: str
    passed: bool
    detail: str = ""
    # False: not run (a smoke round stops at its first failing flow; the flows after it are
    # not run). Said as a value by the smoke step, never read back from the detail's words.
    reached: bool = True


@dataclass(frozen=True)
class SmokeObservation:
    """The smoke flows as the smoke action plugin saw them through `entry`."""

    entry: str
    flows: tuple[FlowObservation, ...]
    green_at: datetime | None  # the end of the first all-green round; None if none was


@dataclass(frozen=True)
class DataObservation:
    """The canary's acknowledged payments reconciled against the new primary."""

    acknowledged: int
    present: int
    lost: int
    rpo_s: float
    ledger_balanced: bool | None  # None: the ledger was not read


@dataclass(frozen=True)
class Observations:
    mode: Mode
    phases: tuple[PhaseObservation, ...]  # the phases meant to run, in order
    flows: tuple[str, ...] = ()  # the smoke flows the plan requires
    rto_target_s: float | None = None
    rpo_target_s: float | None = None
    clock_started_at: datetime | None = None
    smoke: SmokeObservation | None = None
    data: DataObservation | None = None
    after_failback: DataObservation | None = None
    aborted: str | None = None  # why the run could not go on (cancelled, Ansible died)
    rollback: PhaseObservation | None = None
    canary: bool = False  # a canary wrote payments (there was an entry point to write through)


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    reasons: tuple[str, ...]
    findings: tuple[Finding, ...]
    missing: tuple[str, ...]  # observations the verdict needed and did not get
    observed: tuple[str, ...]  # what was observed, in words, for the output and the record
    rto_s: float | None = None  # fault -> observed green, when both were observed
    clock_stopped_at: datetime | None = None

    @property
    def exit_code(self) -> int:
        return self.verdict.exit_code


def _ts(d: datetime) -> str:
    return d.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Verdicts:
    def __init__(self) -> None:
        self.aborted: list[str] = []
        self.failed: list[str] = []
        self.missing: list[str] = []
        self.findings: list[Finding] = []
        self.observed: list[str] = []

    def fail(self, reason: str, check: str | None = None, severity: str = "high",
             detail: str | None = None) -> None:
        self.failed.append(reason)
        if check:
            self.findings.append(Finding(check, severity, detail or reason))

    def verdict(self) -> Verdict:
        if self.aborted:
            return Verdict.ABORTED
        if self.failed:
            return Verdict.FAIL
        if self.missing:
            return Verdict.INCONCLUSIVE
        return Verdict.PASS


def _phases(obs: Observations, v: _Verdicts) -> bool:
    """Judge the phases; True when every recovery phase (not failback) ran and held."""
    good = {PhaseStatus.CHECKED, PhaseStatus.OK} if obs.mode == Mode.DRY_RUN else {PhaseStatus.OK}
    if not obs.phases:
        v.missing.append("no phase ran")
        return False
    stopped = False  # an earlier phase failed, errored or was cancelled
    recovery_held = True
    for p in obs.phases:
        what = f"{p.name}: {p.message}" if p.message else p.name
        if p.status in good:
            if not stopped:
                checks = f" ({len(p.postconditions)} postconditions held)" if p.postconditions \
                    else ""
                v.observed.append(f"phase {p.name} {p.status}{checks}")
            continue
        if p.status == PhaseStatus.SKIPPED and stopped:
            continue  # not reached after the failure named already
        stopped = True
        if p.failback:
            if p.status == PhaseStatus.FAILED:
                v.fail(f"failback failed: {p.message}", "failback", "medium", p.message)
            elif p.status == PhaseStatus.CANCELED:
                v.aborted.append(f"aborted during failback: {p.message or 'cancelled'}")
            else:
                v.missing.append(f"failback phase {p.name} did not run or its effect was not "
                                 f"observed ({p.status}{': ' + p.message if p.message else ''})")
            continue
        recovery_held = False
        if p.status == PhaseStatus.FAILED:
            label = {Mode.CHECK: "not ready: ", Mode.DRY_RUN: "dry run: "}.get(obs.mode, "")
            if obs.mode == Mode.CHECK or p.name == "preflight":
                v.fail(f"{label}preflight failed: {p.message}" if p.name == "preflight" else
                       f"{label}phase {p.name} failed: {p.message}", "preflight", "high",
                       p.message)
            else:
                v.fail(f"{label}phase {p.name} {'would fail' if label else 'failed'}: "
                       f"{p.message}", f"phase:{p.name}", "high", p.message)
        elif p.status == PhaseStatus.CANCELED:
            v.aborted.append(f"phase {what} was cancelled")
        elif p.status == PhaseStatus.ERROR:
            v.missing.append(f"phase {p.name} {p.message}" if not p.reached
                             else f"phase {p.name} did not complete or its effect was not "
                             "observed" + (f": {p.message}" if p.message else ""))
        else:  # skipped with nothing before it failing, or checked in a real run
            v.missing.append(f"phase {p.name} did not run ({p.status}"
                             + (f": {p.message})" if p.message else ")"))
    return recovery_held


def _smoke(obs: Observations, v: _Verdicts) -> datetime | None:
    """Judge the smoke flows; the observed all-green moment, if there was one."""
    s = obs.smoke
    if s is None:
        if obs.flows:
            v.missing.append(f"smoke flows not observed: {', '.join(obs.flows)} (no smoke "
                             "results were published; is there an entry point?)")
        return None
    seen = {f.flow: f for f in s.flows}
    failed = [f.flow for f in s.flows if not f.passed and f.reached]
    not_reached = [f.flow for f in s.flows if not f.passed and not f.reached]
    unseen = [f for f in obs.flows if f not in seen]
    if failed:
        v.fail(f"smoke flows failed: {', '.join(failed)}")
        v.findings.extend(Finding(f"smoke:{f}", "high", f"smoke flow {f} did not pass")
                          for f in failed)
    if not_reached:
        (v.failed if failed else v.missing).append(
            f"smoke flows not reached after the failure: {', '.join(not_reached)}")
    if unseen:
        v.missing.append(f"smoke flows not observed: {', '.join(unseen)}")
    if failed or not_reached or unseen:
        return None
    if s.green_at is None:
        v.missing.append(f"the moment the flows were green through {s.entry} (the smoke "
                         "run published no green_at)")
        return None
    v.observed.append(f"{len(s.flows)} flows observed green through {s.entry} at "
                      f"{_ts(s.green_at)}")
    return s.green_at


def _data(name: str, d: DataObservation) -> str:
    ledger = {True: "ledger balanced", False: "ledger NOT balanced",
              None: "ledger not read"}[d.ledger_balanced]
    return (f"{name}: {d.acknowledged} acknowledged payments, {d.present} present, {d.lost} "
            f"lost (RPO {d.rpo_s:.2f}s), {ledger}")


def judge(obs: Observations) -> Judgement:
    """The verdict, its reasons and findings, what was observed and what is missing."""
    v = _Verdicts()
    if obs.aborted:
        v.aborted.append(f"aborted: {obs.aborted}")
    phases_held = _phases(obs, v)
    rto_s: float | None = None
    stopped_at: datetime | None = None
    if obs.mode == Mode.DRILL:
        if obs.clock_started_at is not None:
            v.observed.append(f"recovery clock started at {_ts(obs.clock_started_at)} (the "
                              "fault)")
        green = _smoke(obs, v) if phases_held or obs.smoke is not None else None
        if green is not None and obs.clock_started_at is not None:
            stopped_at = green
            rto_s = round((green - obs.clock_started_at).total_seconds(), 3)
        t = obs.rto_target_s
        if rto_s is not None and t is not None and rto_s > t:
            v.fail(f"RTO missed: {rto_s:.2f}s > target {t:g}s", "rto", "high",
                   f"RTO {rto_s:.2f}s exceeds the {t:g}s target")
        if phases_held and not v.aborted:
            if rto_s is None and obs.smoke is not None and any(
                    not f.passed for f in obs.smoke.flows):
                v.fail("RTO missed: the service did not recover"
                       + (f" (target {t:g}s)" if t is not None else ""),
                       "rto", "high", "no recovery was observed")
            elif rto_s is None:
                why = "the recovery clock never started (no phase started it)" \
                    if obs.clock_started_at is None else \
                    "no observed all-green moment stopped the recovery clock"
                v.missing.append(f"RTO not measured: {why}")
            _rpo(obs, v)
    if obs.rollback is not None:
        if not (v.aborted or v.failed):
            v.missing.append("a rollback ran, so the recovery did not complete as planned")
        if obs.rollback.status == PhaseStatus.OK:
            v.observed.append("rollback ok: service restored")
        else:
            reason = f"rollback failed: {obs.rollback.message}"
            (v.failed if v.aborted or v.failed else v.missing).append(reason)
            v.findings.append(Finding("rollback", "high", obs.rollback.message))
    verdict = v.verdict()
    reasons = v.aborted + v.failed + [f"inconclusive: {m}" for m in v.missing] \
        if verdict != Verdict.PASS else [_pass_reason(obs, rto_s)]
    return Judgement(verdict, tuple(reasons), tuple(v.findings), tuple(v.missing),
                     tuple(v.observed), rto_s, stopped_at)


def _rpo(obs: Observations, v: _Verdicts) -> None:
    d, t = obs.data, obs.rpo_target_s
    if d is None:
        if t is not None:
            why = "the canary's payments were not reconciled" if obs.canary else \
                "no canary ran (its flow pack declares none, or there is no entry point)"
            v.missing.append(f"RPO not measured: {why} (target {t:g}s)")
        return
    v.observed.append(_data("canary", d))
    if t is not None and (d.rpo_s > t or (t == 0 and d.lost > 0)):
        reason = (f"RPO missed: {d.rpo_s:.2f}s, {d.lost} acknowledged payments lost "
                  f"(target {t:g}s)")
        v.fail(reason, "rpo")
    if d.ledger_balanced is False:
        v.fail("reconciliation: the ledger does not balance after failover", "ledger", "high",
               "debits differ from credits")
    elif d.ledger_balanced is None:
        v.missing.append("reconciliation: the ledger's balance was not read")
    a = obs.after_failback
    if a is not None:
        v.observed.append(_data("after failback", a))
        if a.lost > d.lost:
            lost = a.lost - d.lost
            v.fail(f"failback lost {lost} acknowledged payments", "failback-data", "high",
                   f"{lost} acknowledged payments lost")


def _pass_reason(obs: Observations, rto_s: float | None) -> str:
    if obs.mode == Mode.CHECK:
        return "ready: every preflight check passed"
    if obs.mode == Mode.DRY_RUN:
        return "dry run: every phase ran in check mode; nothing was changed"
    t = f" (target {obs.rto_target_s:g}s)" if obs.rto_target_s is not None else ""
    lost = obs.data.lost if obs.data is not None else 0
    assert rto_s is not None  # a drill passes only with an observed RTO
    return f"all flows green in {rto_s:.2f}s{t}, {lost} payments lost"


__all__ = ["DataObservation", "Finding", "FlowObservation", "Judgement", "Mode", "Observations",
           "PhaseObservation", "PhaseStatus", "SmokeObservation", "Verdict", "judge"]
