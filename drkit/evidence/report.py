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
        return json.dumps(r.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
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
    return env.get_template(name).render(
        r=r, integrity=integrity, timeline=timeline(r), failed={str(s) for s in failed},
        generated=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), verify_hint=verify_hint,
        failures=sum(1 for p in r.phases if p.status in failed)
        + sum(1 for s in r.smoke if s.status in failed),
        tests=len(r.phases) + len(r.smoke),
    )
