"""The audit pack: drill history over a period as one self-contained HTML file.

Pass rate, RTO and RPO per drill against target (inline SVG bar charts), the recovery-time
trend (least-squares slope), failures with their evidence ids, and the services overdue under
the plan's policy. No external resources: the file opens offline years later, and its Content
Security Policy forbids scripts, so a hostile scenario name could not run even if an escape
were missed (jinja2 autoescape does the escaping).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from drkit.errors import BadInput
from drkit.status import DrillSummary, StatusReport, compute, iso

if TYPE_CHECKING:
    from drkit.config import PlanModel

_REL = re.compile(r"^(\d+)([dw])$")


def parse_when(text: str, *, now: datetime, end: bool = False) -> datetime:
    """'2025-01-01', '2025-01-01T12:00:00Z' or '90d'/'12w' ago. A bare date given as an end is
    inclusive (the whole day). Raises BadInput with the accepted forms."""
    t = text.strip()
    m = _REL.match(t)
    try:
        if m:
            days = int(m.group(1)) * (7 if m.group(2) == "w" else 1)
            return now - timedelta(days=days)
        if len(t) == 10:
            d = date.fromisoformat(t)
            start = datetime(d.year, d.month, d.day, tzinfo=UTC)
            return start + timedelta(days=1) if end else start
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
        # In UTC now: a time near year 1 or 9999 with an offset cannot be, and would
        # overflow later, when compared with the drills' times.
        return dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)
    except (ValueError, OverflowError):  # OverflowError: '99999999999d' ago, before year 1
        raise BadInput(f"{text!r} is not a date (use 2025-01-31, 2025-01-31T12:00:00Z, or 90d "
                       "for 90 days ago)") from None


@dataclass(frozen=True)
class Trend:
    """Least-squares slope of measured RTO over time."""

    points: int
    slope_s_per_30d: float | None

    @property
    def direction(self) -> str:
        if self.slope_s_per_30d is None:
            return "not enough drills with a measured RTO (needs 2)"
        if abs(self.slope_s_per_30d) < 0.05:
            return "flat"
        return "improving (faster)" if self.slope_s_per_30d < 0 else "worsening (slower)"


@dataclass(frozen=True)
class Report:
    title: str
    since: datetime
    until: datetime
    generated_at: datetime
    drills: tuple[DrillSummary, ...]  # in the period, oldest first
    status: StatusReport  # as of min(until, generated_at)
    # The findings register (drkit.governance.findings), as JSON: those still open, and those
    # opened, closed by a retest or accepted during the period.
    findings: tuple[dict[str, Any], ...] = ()

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(d.verdict for d in self.drills))

    @property
    def pass_rate(self) -> float | None:
        return (sum(d.passed for d in self.drills) / len(self.drills)) if self.drills else None

    @property
    def failures(self) -> tuple[DrillSummary, ...]:
        return tuple(d for d in self.drills if not d.passed)

    @property
    def trend(self) -> Trend:
        pts = [(d.at.timestamp(), d.rto_s) for d in self.drills if d.rto_s is not None]
        if len(pts) < 2 or len({x for x, _ in pts}) < 2:
            return Trend(len(pts), None)
        mx = sum(x for x, _ in pts) / len(pts)
        my = sum(y for _, y in pts) / len(pts)
        num = sum((x - mx) * (y - my) for x, y in pts)
        den = sum((x - mx) ** 2 for x, _ in pts)
        return Trend(len(pts), num / den * 30 * 86400)

    def to_json(self) -> dict[str, Any]:
        t = self.trend
        return {
            "title": self.title, "since": iso(self.since), "until": iso(self.until),
            "generated_at": iso(self.generated_at), "drills": [d.to_json() for d in self.drills],
            "counts": self.counts, "pass_rate": self.pass_rate,
            "failures": [{"id": d.id, "scenario": d.scenario, "environment": d.environment,
                          "verdict": d.verdict, "findings": list(d.findings)}
                         for d in self.failures],
            "rto_trend": {"points": t.points, "slope_s_per_30d": t.slope_s_per_30d,
                          "direction": t.direction},
            "status": self.status.to_json(),
            "findings": list(self.findings),
        }


def build(model: PlanModel, drills: Iterable[DrillSummary], *, since: datetime,
          until: datetime, now: datetime,
          findings: Iterable[dict[str, Any]] = ()) -> Report:
    if since >= until:
        raise BadInput(f"--since {iso(since)} is not before --until {iso(until)}")
    all_drills = list(drills)
    period = tuple(sorted((d for d in all_drills if since <= d.started_at < until),
                          key=lambda d: (d.started_at, d.seq or 0)))
    # Overdue as the period ended (or now, for a period still running): history before the
    # period counts, since a drill from last quarter can still be within its interval.
    as_of = min(until, now)
    def relevant(f: dict[str, Any]) -> bool:
        if f.get("status") in ("open", "accepted"):
            return True
        stamps = [f.get("opened_at"), f.get("closed_at"), f.get("accepted_at")]
        return any(since <= datetime.fromisoformat(s.replace("Z", "+00:00")) < until
                   for s in stamps if s)

    return Report(title=model.name, since=since, until=until, generated_at=now, drills=period,
                  status=compute(model, all_drills, now=as_of),
                  findings=tuple(f for f in findings if relevant(f)))


# --------------------------------------------------------------------------- charts


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    w: float
    h: float
    target_y: float | None
    ok: bool
    label: str  # tooltip
    missing: bool  # not measured: drawn as a cross


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    top: int
    bottom: int
    ticks: tuple[tuple[float, str], ...]  # (y, label)
    bars: tuple[Bar, ...]
    xlabels: tuple[tuple[float, str], ...]


def _fmt_s(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.0f}s" if v >= 100 else f"{v:.3g}s"


def bar_chart(drills: Sequence[DrillSummary], metric: str, *, width: int = 760,
              height: int = 240) -> Chart:
    """Bars of measured `metric` ("rto" or "rpo") per drill, a tick at each drill's target."""
    left, top, bottom, right = 56, 12, 40, 12
    plot_w, plot_h = width - left - right, height - top - bottom
    vals = [(getattr(d, f"{metric}_s"), getattr(d, f"{metric}_target_s")) for d in drills]
    ymax = max([v for pair in vals for v in pair if v is not None] + [1.0]) * 1.15
    slot = plot_w / max(1, len(drills))
    bw = max(2.0, min(36.0, slot * 0.6))

    def y(v: float) -> float:
        return top + plot_h - (v / ymax) * plot_h

    bars = []
    for i, (d, (v, t)) in enumerate(zip(drills, vals, strict=True)):
        x = left + slot * i + (slot - bw) / 2
        ok = v is not None and (t is None or v <= t) and d.passed
        label = (f"{d.started_at:%Y-%m-%d} {d.scenario} on {d.environment} ({d.id}): "
                 f"{metric.upper()} {_fmt_s(v)}, target {_fmt_s(t)}, {d.verdict}")
        vv = v if v is not None else 0.0
        bars.append(Bar(round(x, 1), round(y(vv), 1), round(bw, 1),
                        round(top + plot_h - y(vv), 1),
                        round(y(t), 1) if t is not None else None, ok, label, v is None))
    ticks = tuple((round(y(ymax / 1.15 * k / 4), 1), _fmt_s(ymax / 1.15 * k / 4))
                  for k in range(5))
    step = max(1, len(drills) // 8)  # at most ~8 date labels: they must not overlap
    xlabels = tuple((round(left + slot * i + slot / 2, 1), f"{d.started_at:%m-%d}")
                    for i, d in enumerate(drills) if i % step == 0)
    return Chart(width, height, left, top, bottom, ticks, tuple(bars), xlabels)


@dataclass(frozen=True)
class TrendChart:
    width: int
    height: int
    points: tuple[tuple[float, float, str], ...]  # x, y, tooltip
    line: str  # polyline points
    fit: tuple[float, float, float, float] | None  # x1 y1 x2 y2 of the least-squares line
    target_y: float | None
    ticks: tuple[tuple[float, str], ...]


def trend_chart(report: Report, *, width: int = 760, height: int = 200) -> TrendChart:
    left, top, bottom, right = 56, 12, 28, 12
    plot_w, plot_h = width - left - right, height - top - bottom
    pts = [(d, d.rto_s) for d in report.drills if d.rto_s is not None]
    targets = [d.rto_target_s for d in report.drills if d.rto_target_s is not None]
    target = min(targets) if targets else None
    ymax = max([v for _, v in pts] + ([target] if target else []) + [1.0]) * 1.15
    t0, t1 = report.since.timestamp(), report.until.timestamp()

    def xy(ts: float, v: float) -> tuple[float, float]:
        return (round(left + (ts - t0) / (t1 - t0) * plot_w, 1),
                round(top + plot_h - v / ymax * plot_h, 1))

    points = tuple((*xy(d.at.timestamp(), v), f"{d.at:%Y-%m-%d} {d.id}: RTO {_fmt_s(v)}")
                   for d, v in pts)
    fit = None
    tr = report.trend
    if tr.slope_s_per_30d is not None:
        xs = [d.at.timestamp() for d, _ in pts]
        mx, my = sum(xs) / len(xs), sum(v for _, v in pts) / len(pts)
        slope = tr.slope_s_per_30d / (30 * 86400)
        a, b = min(xs), max(xs)
        fit = (*xy(a, max(0.0, my + slope * (a - mx))), *xy(b, max(0.0, my + slope * (b - mx))))
    ticks = tuple((round(top + plot_h - k / 4 * plot_h, 1), _fmt_s(ymax * k / 4))
                  for k in range(5))
    return TrendChart(width, height, points, " ".join(f"{x},{y}" for x, y, _ in points), fit,
                      xy(t0, target)[1] if target is not None else None, ticks)


# --------------------------------------------------------------------------- HTML

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>DR drill report: {{ r.title }} {{ since }} to {{ until }}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:62em;color:#1b1f23}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #eee;padding:.3em .5em;
text-align:left;vertical-align:top}th{background:#f6f8fa}.pass{color:#1a7f37}.fail{color:#cf222e}
.num{text-align:right;font-variant-numeric:tabular-nums}code{font-size:.92em}
.kpi{display:inline-block;margin-right:2.5em}.kpi b{display:block;font-size:1.6em}
svg text{font-size:11px;fill:#57606a}.ok{fill:#2da44e}.bad{fill:#cf222e}
</style></head><body>
<h1>Disaster-recovery drills: {{ r.title }}</h1>
<p>Period {{ since }} to {{ until }} (UTC) · generated {{ generated }} by drkit.</p>
<div>
<span class="kpi"><b>{{ r.drills|length }}</b>drills</span>
<span class="kpi"><b>{{ pass_rate }}</b>pass rate</span>
<span class="kpi"><b>{{ r.failures|length }}</b>not passed</span>
<span class="kpi"><b>{{ overdue|length }}</b>services overdue</span>
</div>
<p>Verdicts: {% for v, n in counts %}{{ v }} {{ n }}{% if not loop.last %}, {% endif %}
{%- else %}none{% endfor %}.</p>

<h2>RTO per drill against target</h2>
{{ chart(rto, "rto") }}
<h2>RPO per drill against target</h2>
{{ chart(rpo, "rpo") }}

<h2>Recovery-time trend</h2>
<p>Measured RTO over the period: {{ trend.direction }}
{%- if trend.slope_s_per_30d is not none %} ({{ "%+.2f"|format(trend.slope_s_per_30d) }}s
per 30 days over {{ trend.points }} drills){% endif %}.</p>
<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="RTO trend"
 width="{{ tc.width }}" height="{{ tc.height }}" viewBox="0 0 {{ tc.width }} {{ tc.height }}">
{% for y, label in tc.ticks -%}
<line x1="56" x2="{{ tc.width - 12 }}" y1="{{ y }}" y2="{{ y }}" stroke="#eee"/>
<text x="50" y="{{ (y + 4)|round(1) }}" text-anchor="end">{{ label }}</text>
{% endfor -%}
{% if tc.target_y is not none -%}
<line x1="56" x2="{{ tc.width - 12 }}" y1="{{ tc.target_y }}" y2="{{ tc.target_y }}"
 stroke="#cf222e" stroke-dasharray="2 3"><title>RTO target</title></line>
{% endif -%}
{% if tc.line %}<polyline points="{{ tc.line }}" fill="none" stroke="#0969da"
 stroke-width="1.5"/>{% endif %}
{% if tc.fit -%}
<line x1="{{ tc.fit[0] }}" y1="{{ tc.fit[1] }}" x2="{{ tc.fit[2] }}" y2="{{ tc.fit[3] }}"
 stroke="#8250df" stroke-dasharray="6 4"><title>least-squares trend</title></line>
{% endif -%}
{% for x, y, label in tc.points -%}
<circle cx="{{ x }}" cy="{{ y }}" r="3.5" fill="#0969da"><title>{{ label }}</title></circle>
{% endfor %}</svg>

<h2>Failures</h2>
{% if r.failures %}<table>
<tr><th>When</th><th>Evidence id</th><th>Scenario</th><th>Environment</th><th>Verdict</th>
<th>Findings</th></tr>
{% for d in r.failures -%}
<tr><td>{{ when(d) }}</td><td><code>{{ d.id }}</code></td><td>{{ d.scenario }}</td>
<td>{{ d.environment }}</td><td class="fail">{{ d.verdict }}</td>
<td>{% for f in d.findings %}{{ f }}{% if not loop.last %}<br>{% endif %}
{%- else %}none recorded{% endfor %}</td></tr>
{% endfor %}</table>{% else %}<p>No failed drills in the period.</p>{% endif %}

<h2>Findings</h2>
{% if r.findings %}<table>
<tr><th>Id</th><th>Severity</th><th>Status</th><th>Check</th><th>Owner</th><th>Due</th>
<th>Opened by evidence</th><th>Closed by retest</th></tr>
{% for f in r.findings -%}
<tr><td><code>{{ f.id }}</code></td><td>{{ f.severity }}</td>
<td class="{{ 'pass' if f.status == 'closed' else 'fail' }}">{{ f.status }}{% if f.overdue %}
(overdue){% endif %}</td><td>{{ f.check }}: {{ f.message }}</td><td>{{ f.owner }}</td>
<td>{{ f.due_at }}</td><td><code>{{ f.evidence_id }}</code></td>
<td>{% if f.closed_by_evidence %}<code>{{ f.closed_by_evidence }}</code>{% elif f.accepted_by %}
risk accepted by {{ f.accepted_by }}: {{ f.acceptance_reason }}{% endif %}</td></tr>
{% endfor %}</table>{% else %}<p>No findings open or changed in the period.</p>{% endif %}

<h2>Services overdue</h2>
<p>As of {{ as_of }}, under the plan's policy (a passing drill every:
{% for t, s in policy %}tier {{ t }} {{ s }}{% if not loop.last %}, {% endif %}{% endfor %}).</p>
<table><tr><th>Service</th><th>Tier</th><th>Owner</th><th>State</th><th>Last drill</th>
<th>Why</th></tr>
{% for s in r.status.services -%}
<tr><td>{{ s.service }}</td><td>{{ s.tier }}</td><td>{{ s.owner }}</td>
<td class="{{ 'pass' if s.compliant else 'fail' }}">{{ s.state }}</td>
<td>{% if s.last %}<code>{{ s.last.id }}</code> {{ when(s.last) }}{% else %}never{% endif %}</td>
<td>{{ s.reason }}</td></tr>
{% endfor %}</table>

<h2>All drills</h2>
<table><tr><th>When</th><th>Evidence id</th><th>Scenario</th><th>Env</th><th>Verdict</th>
<th class="num">RTO / target</th><th class="num">RPO / target</th><th class="num">Lost</th></tr>
{% for d in r.drills -%}
<tr><td>{{ when(d) }}</td><td><code>{{ d.id }}</code></td><td>{{ d.scenario }}</td>
<td>{{ d.environment }}</td><td class="{{ 'pass' if d.passed else 'fail' }}">{{ d.verdict }}</td>
<td class="num">{{ secs(d.rto_s) }} / {{ secs(d.rto_target_s) }}</td>
<td class="num">{{ secs(d.rpo_s) }} / {{ secs(d.rpo_target_s) }}</td>
<td class="num">{{ d.lost_payments if d.lost_payments is not none else "n/a" }}</td></tr>
{% else %}<tr><td colspan="8">No drills in the period.</td></tr>{% endfor %}</table>
<p>Each evidence id names a signed, hash-chained record: check the chain with
<code>drkit evidence verify</code>.</p>
</body></html>
"""

_CHART = """{% macro chart(c, metric) -%}
<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{{ metric|upper }} per drill"
 width="{{ c.width }}" height="{{ c.height }}" viewBox="0 0 {{ c.width }} {{ c.height }}">
{% for y, label in c.ticks -%}
<line x1="{{ c.left }}" x2="{{ c.width - 12 }}" y1="{{ y }}" y2="{{ y }}" stroke="#eee"/>
<text x="{{ c.left - 6 }}" y="{{ (y + 4)|round(1) }}" text-anchor="end">{{ label }}</text>
{% endfor -%}
{% for b in c.bars -%}
<g><title>{{ b.label }}</title>
{%- if b.missing %}<text x="{{ (b.x + b.w / 2)|round(1) }}" y="{{ (b.y - 4)|round(1) }}"
 text-anchor="middle" class="bad">&#215;</text>
{%- else %}<rect x="{{ b.x }}" y="{{ b.y }}" width="{{ b.w }}" height="{{ b.h }}"
 class="{{ 'ok' if b.ok else 'bad' }}"/>{% endif %}
{%- if b.target_y is not none %}<line x1="{{ (b.x - 3)|round(1) }}"
 x2="{{ (b.x + b.w + 3)|round(1) }}" y1="{{ b.target_y }}" y2="{{ b.target_y }}"
 stroke="#1b1f23" stroke-width="2"/>{% endif %}</g>
{% endfor -%}
{% for x, label in c.xlabels -%}
<text x="{{ x }}" y="{{ c.height - c.bottom + 16 }}" text-anchor="middle">{{ label }}</text>
{% endfor %}</svg>
<p><small>Bars: measured {{ metric|upper }} (green: met and passed; red: missed or not passed;
&#215;: not measured). Black ticks: the target.</small></p>
{%- endmacro %}"""


def render_html(report: Report) -> str:
    import jinja2

    from drkit.config import format_duration

    env = jinja2.Environment(loader=jinja2.DictLoader({"chart.html": _CHART}),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    tmpl = env.from_string("{% from 'chart.html' import chart %}" + _TEMPLATE)
    rate = report.pass_rate
    return tmpl.render(
        r=report,
        since=f"{report.since:%Y-%m-%d %H:%M}", until=f"{report.until:%Y-%m-%d %H:%M}",
        generated=f"{report.generated_at:%Y-%m-%d %H:%M}",
        as_of=f"{report.status.now:%Y-%m-%d %H:%M}",
        pass_rate="n/a" if rate is None else f"{rate:.0%}",
        counts=sorted(report.counts.items()),
        overdue=[s for s in report.status.services if not s.compliant],
        rto=bar_chart(report.drills, "rto"), rpo=bar_chart(report.drills, "rpo"),
        trend=report.trend, tc=trend_chart(report),
        policy=sorted((t, format_duration(s)) for t, s in _policy(report)),
        when=lambda d: f"{d.started_at:%Y-%m-%d %H:%M}", secs=_fmt_s,
    )


def _policy(report: Report) -> list[tuple[int, float]]:
    seen = {}
    for s in report.status.services:
        if s.interval_s is not None:
            seen[s.tier] = s.interval_s
    return list(seen.items())


__all__ = ["Report", "Trend", "bar_chart", "build", "parse_when", "render_html", "trend_chart"]
