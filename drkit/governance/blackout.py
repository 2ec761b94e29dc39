"""Blackout windows: times when drills and runbooks must not run (month-end close, peak days).

The windows come from the plan (`blackouts:`); their formats, and how a window written in local
time becomes UTC instants across DST changes, are in drkit.windows. This module answers the
questions a run asks: is now inside a window (`check`, `active`), and which windows come next
(`next_windows`, for a schedule).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from drkit.errors import BadInput
from drkit.governance import who
from drkit.windows import Rule, parse, spans

if TYPE_CHECKING:
    from drkit.config import Blackout, Plan


@dataclass(frozen=True)
class Occurrence:
    """One concrete occurrence of a window, as UTC instants (end exclusive)."""

    window: Blackout
    start: datetime
    end: datetime

    def contains(self, at: datetime) -> bool:
        return self.start <= at < self.end

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.window.timezone)

    def local(self, at: datetime) -> str:
        """An instant in the window's own time zone, to the minute: 2026-12-01T06:00+00:00."""
        return at.astimezone(self.zone).isoformat(timespec="minutes")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.window.name, "every": self.window.every,
                "timezone": self.window.timezone,
                "start": self.local(self.start), "end": self.local(self.end),
                "start_utc": _z(self.start), "end_utc": _z(self.end)}


@dataclass(frozen=True)
class BlackoutDecision:
    """Whether a run may start at `at`, and why (recorded in the run's evidence)."""

    allowed: bool
    at: datetime
    window: Blackout | None = None
    occurrence: Occurrence | None = None
    overridden: bool = False
    reason: str | None = None
    operator: str | None = None

    def to_evidence(self) -> dict[str, Any]:
        return {
            "checked_at": _z(self.at),
            "allowed": self.allowed,
            "inside": self.occurrence.to_json() if self.occurrence else None,
            "overridden": self.overridden,
            "override_reason": self.reason,
            "override_by": self.operator if self.overridden else None,
        }


def _z(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _aware(at: datetime) -> datetime:
    # A naive datetime is taken as UTC: schedulers and tests pass UTC; local time is ambiguous.
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)


def _rules(plan: Plan) -> list[Rule[Blackout]]:
    rules = []
    for b in plan.model.blackouts:
        try:
            rules.append(parse(b))
        except ValueError as e:
            raise BadInput(f"{plan.path.name}: {e}") from None
    return rules


def _occurrences(rule: Rule[Blackout], start: datetime, end: datetime) -> Iterator[Occurrence]:
    """Occurrences of one rule that overlap [start, end)."""
    for s, e in spans(rule, start, end):
        yield Occurrence(rule.window, s, e)


def active(plan: Plan, at: datetime) -> Occurrence | None:
    """The window occurrence `at` falls in; of several, the one that ends last."""
    at = _aware(at)
    hits = [o for r in _rules(plan) for o in _occurrences(r, at, at + timedelta(microseconds=1))
            if o.contains(at)]
    return max(hits, key=lambda o: o.end) if hits else None


def active_window(plan: Plan, at: datetime) -> Blackout | None:
    occ = active(plan, at)
    return occ.window if occ else None


def check(plan: Plan, at: datetime | None = None, override_reason: str | None = None, *,
          operator: str | None = None) -> BlackoutDecision:
    """May a run start at `at`? Inside a window: BadInput, unless overridden with a reason."""
    at = _aware(at or datetime.now(UTC))
    reason = override_reason.strip() if override_reason is not None else None
    if override_reason is not None and not reason:
        raise BadInput("--override-blackout needs a reason (say why this run cannot wait)")
    occ = active(plan, at)
    if occ is None:
        return BlackoutDecision(allowed=True, at=at)
    if reason is None:
        raise BadInput(f"inside blackout window {occ.window.name!r} (until {occ.local(occ.end)}); "
                       "pass --override-blackout REASON to run anyway")
    return BlackoutDecision(allowed=True, at=at, window=occ.window, occurrence=occ,
                            overridden=True, reason=reason, operator=who(operator))


def next_windows(plan: Plan, start: datetime, days: float) -> list[Occurrence]:
    """Occurrences overlapping [start, start + days), in order: what a schedule should skip."""
    start = _aware(start)
    end = start + timedelta(days=days)
    found = [o for r in _rules(plan) for o in _occurrences(r, start, end)]
    return sorted(found, key=lambda o: (o.start, o.end, o.window.name))


def blocked(windows: Sequence[Occurrence], at: datetime) -> Occurrence | None:
    """Of `next_windows(...)`, the one containing `at` (for a scheduler walking its runs)."""
    at = _aware(at)
    return next((o for o in windows if o.contains(at)), None)
