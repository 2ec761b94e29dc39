"""Reports of one record: HTML (one offline file), Markdown, JSON and JUnit XML.

Templates live in drkit/evidence/templates/ (package data); jinja2 is imported only here, when
a report is really made. Geometry of the timeline is computed here so the template stays dumb.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from drkit.errors import BadInput
from drkit.evidence.record import Record, Status, parse_time

TEMPLATES = Path(__file__).parent / "templates"


class Format(StrEnum):
    HTML = "html"
    MD = "md"
    JSON = "json"
    JUNIT = "junit"


@dataclass(frozen=True)
class Integrity:
    """What the exporter could check about the record it exports."""

    checked: bool  # a public key was available and the ledger was verified
    ok: bool
    summary: str
    issues: tuple[str, ...] = ()

    @property
    def banner(self) -> str | None:
        """The warning every format opens with when the record is not verified intact."""
        if self.ok:
            return None
        if self.checked:
            return ("WARNING: this record FAILED verification (tampered or damaged): "
                    f"do not rely on it. {self.summary}")
        return f"WARNING: this record was NOT verified: {self.summary}"


@dataclass(frozen=True)
class Case:
    """One JUnit testcase."""

    classname: str
    name: str
    time_s: float = 0.0
    failure: str | None = None  # why it failed
    kind: str = ""  # the failure's type
    skipped: bool = False
    detail: str = ""  # failure body or system-out


_BAD = {"failed", "unreachable", "aborted", "interrupted", "running"}


def junit_cases(r: Record, integrity: Integrity) -> list[Case]:
    """A testcase per phase and smoke flow, and for RTO, RPO, reconciliation, integrity and the
    verdict: anything not observed or not met is a failure, so a failed drill is red in CI."""
    cases: list[Case] = []
    for p in r.phases:
        secs = (p.duration_ms or 0) / 1000
        if p.status in _BAD:
            tasks = "\n".join(f"{t.task} on {t.host}: {t.message}" for t in p.tasks
                              if t.status in _BAD)
            cases.append(Case(f"{r.name}.phases", p.name, secs,
                              f"phase {p.status}" + (f": {p.message}" if p.message else ""),
                              str(p.status), detail=tasks))
        else:
            cases.append(Case(f"{r.name}.phases", p.name, secs, skipped=p.status == "skipped",
                              detail=p.message))
    for sm in r.smoke:
        secs = (sm.duration_ms or 0) / 1000
        bad = sm.status != "ok"
        cases.append(Case(f"{r.name}.smoke", sm.flow, secs,
                          f"smoke flow {sm.flow} {sm.status}" + (
                              f": {sm.message}" if sm.message else "") if bad else None,
                          "smoke"))
    if r.kind == "drill":
        for t in r.targets or ():
            cases.append(_target(r, "rto", t.service, t.rto_met, t.rto_measured_ms,
                                 t.rto_target_ms, ""))
            lost = f", {t.lost_payments} acknowledged payments lost" \
                if t.lost_payments is not None else ""
            cases.append(_target(r, "rpo", t.service, t.rpo_met, t.rpo_measured_ms,
                                 t.rpo_target_ms, lost))
        rec = r.reconciliation if isinstance(r.reconciliation, dict) else None
        ledger = rec.get("ledger") if rec else None
        balanced = ledger.get("balanced") if isinstance(ledger, dict) else None
        lost_count = rec.get("lost_count") if rec else None
        if rec is None:
            why = "not observed: no reconciliation of acknowledged payments in the record"
        elif balanced is not True:
            why = "the ledger does not balance" if balanced is False else \
                "not observed: the ledger's balance was not read"
        elif isinstance(lost_count, int) and lost_count > 0:
            why = f"{lost_count} acknowledged payments missing from the new primary"
        else:
            why = ""
        cases.append(Case(f"{r.name}.data", "reconciliation", failure=why or None,
                          kind="reconciliation",
                          detail="" if why else f"{rec.get('acked_count') if rec else '?'} "
                          "acknowledged payments all present, ledger balanced"))
    cases.append(Case(f"{r.name}.evidence", "integrity",
                      failure=None if integrity.ok else integrity.summary, kind="integrity",
                      detail=integrity.summary if integrity.ok else "\n".join(integrity.issues)))
    verdict = str(r.verdict)
    cases.append(Case(f"{r.name}", "verdict", failure=None if verdict == "pass" else
                      f"verdict {verdict}", kind=verdict,
                      detail="\n".join(f"[{f.severity}] {f.check}: {f.detail}"
                                       for f in r.findings)))
    return cases


def _target(r: Record, what: str, service: str, met: bool | None, measured: int | None,
            target: int | None, extra: str) -> Case:
    name = f"{what.upper()} {service}"
    figures = f"measured {_dur(measured)}, target {_dur(target)}{extra}"
    if met is None:
        return Case(f"{r.name}.targets", name, failure=f"{what.upper()} not measured "
                    f"(target {_dur(target)})", kind=what)
    if not met:
        return Case(f"{r.name}.targets", name, failure=f"{what.upper()} missed: {figures}",
                    kind=what)
    return Case(f"{r.name}.targets", name, detail=f"{what.upper()} met: {figures}")


@dataclass(frozen=True)
class Bar:
    name: str
    status: str
    x: float
    y: float
    width: float
    label: str


@dataclass(frozen=True)
class Timeline:
    width: int
    height: int
    left: int
    bars: tuple[Bar, ...]
    budget_x: float | None
    clock_start_x: float | None
    clock_stop_x: float | None
    ticks: tuple[tuple[float, str], ...]


def _secs(a: str | None, b: str | None) -> float | None:
    if not a or not b:
        return None
    return (parse_time(b) - parse_time(a)).total_seconds()


def timeline(r: Record) -> Timeline | None:
    """Phases as bars on a time axis, with the recovery clock and the RTO budget line."""
    phases = [p for p in r.phases if p.started_at]
    if not phases:
        return None
    t0 = min(p.started_at for p in phases if p.started_at)
    # The phases, not the record's own start and end: the record is opened before and sealed
    # after them, and the chart is about the recovery.
    ends = [p.ended_at or p.started_at for p in phases]
    span = max(_secs(t0, e) or 0.0 for e in ends)
    budget = r.rto_budget_ms
    clock0 = _secs(t0, r.clock.started_at)
    if clock0 is not None and budget is not None:
        span = max(span, clock0 + budget / 1000)
    span = max(span, 0.001) * 1.05
    left, width, row = 150, 860, 26
    plot = width - left - 10

    def x(seconds: float) -> float:
        return round(left + plot * seconds / span, 1)

    bars = []
    for i, p in enumerate(phases):
        start = _secs(t0, p.started_at) or 0.0
        dur = (p.duration_ms or 0) / 1000
        bars.append(Bar(p.name, str(p.status), x(start), 30 + i * row,
                        max(round(plot * dur / span, 1), 1.5), f"{dur:.1f}s"))
    step = _nice_step(span)
    ticks = tuple((x(t * step), f"{t * step:g}s") for t in range(int(span / step) + 1))
    return Timeline(
        width=width, height=30 + len(phases) * row + 30, left=left, bars=tuple(bars),
        budget_x=x(clock0 + budget / 1000) if clock0 is not None and budget is not None else None,
        clock_start_x=x(clock0) if clock0 is not None else None,
        clock_stop_x=x(_secs(t0, r.clock.stopped_at) or 0.0) if r.clock.stopped_at else None,
        ticks=ticks,
    )


def _nice_step(span: float) -> float:
    for step in (0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if span / step <= 10:
            return step
    return 7200


def _dur(v: int | None) -> str:
    return "-" if v is None else f"{v / 1000:g}s"


def render(r: Record, fmt: Format | str, integrity: Integrity,
           verify_hint: str = "drkit evidence verify") -> str:
    """The report as text. `integrity` is what the caller verified (shown, never assumed)."""
    try:
        fmt = Format(fmt)
    except ValueError:
        raise BadInput(f"unknown format {fmt!r} (use html, md, json or junit)") from None
    if fmt == Format.JSON:
        data = r.to_dict()
        if integrity.banner:
            # First member, so a reader of the JSON meets it before the verdict.
            data = {"integrity_warning": {"banner": integrity.banner, "checked":
                                          integrity.checked, "ok": integrity.ok,
                                          "issues": list(integrity.issues)},
                    **json.loads(json.dumps(data, sort_keys=True))}
            return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=lambda name: name is not None and name.endswith((".html.j2", ".xml.j2")),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["dur"] = _dur
    name = {Format.HTML: "report.html.j2", Format.MD: "report.md.j2",
            Format.JUNIT: "junit.xml.j2"}[fmt]
    failed = {Status.FAILED, Status.UNREACHABLE, Status.ABORTED, Status.INTERRUPTED}
    cases = junit_cases(r, integrity) if fmt == Format.JUNIT else []
    return env.get_template(name).render(
        r=r, integrity=integrity, timeline=timeline(r), failed={str(s) for s in failed},
        generated=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), verify_hint=verify_hint,
        cases=cases, failures=sum(1 for c in cases if c.failure),
        skipped=sum(1 for c in cases if c.skipped), tests=len(cases),
        badge=str(r.verdict) if integrity.ok else "unverified",
    )
