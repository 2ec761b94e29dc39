"""Time windows written in the plan (blackouts): their grammar, and their occurrences in time.

A leaf (standard library only) below both of its users: drkit.config validates each window with
it when the plan loads, so a bad window is a plan error with file and line, and
drkit.governance.blackout resolves the plan's windows against the clock with it. (It was part of
governance.blackout, which config imported while blackout imported config: issue 13.)

A window in the plan (`blackouts:`) is a start and an end in the window's own time zone, either
once or recurring. The formats of `start` and `end` depend on `every`:

    every   start / end                      example
    once    YYYY-MM-DD[THH:MM]               2026-11-27 .. 2026-11-28T06:00
    year    MM-DD[THH:MM]                    11-27 .. 11-28            (Black Friday, Cyber Monday)
    month   D[THH:MM], D in 1..31 or -1..-31 -2T18:00 .. 2T06:00      (-1 is the last day)
    week    DOW[ HH:MM], DOW mon..sun        fri 22:00 .. mon 06:00
    day     HH:MM                            23:30 .. 00:30            (nightly batch)

With `business_days: true` (month only) D counts Monday-Friday days: `-2` .. `1` is the last two
business days of a month through the first one. Public holidays are not known to drkit.

An end without a time means the END of that day (date ranges are inclusive, as people write
them). An end at or before its start is in the next period, so windows may cross midnight, the
month end or the year end. Wall-clock times are resolved with zoneinfo: on a DST change a time
that does not exist moves forward (as cron does), and a time that exists twice is taken as the
earlier for a start and the later for an end, so a window is never shorter than written.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import Any, Generic, Protocol, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class Window(Protocol):
    """A window as written (drkit.config.Blackout is one)."""

    @property
    def name(self) -> str: ...
    @property
    def start(self) -> str: ...
    @property
    def end(self) -> str: ...
    @property
    def timezone(self) -> str: ...
    @property
    def every(self) -> str: ...


W = TypeVar("W", bound=Window)

_TIME = r"(?:[T ](?P<h>\d{1,2}):(?P<mi>\d{2}))?"
_ONCE = re.compile(r"^(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})" + _TIME + r"$")
_YEAR = re.compile(r"^(?P<mo>\d{1,2})-(?P<d>\d{1,2})" + _TIME + r"$")
_MONTH = re.compile(r"^(?P<d>-?\d{1,2})" + _TIME + r"$")
_WEEK = re.compile(r"^(?P<dow>[A-Za-z]{3,9})" + _TIME + r"$")
_DAY = re.compile(r"^(?P<h>\d{1,2}):(?P<mi>\d{2})$")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_FORMATS = {
    "once": "YYYY-MM-DD or YYYY-MM-DDTHH:MM",
    "year": "MM-DD or MM-DDTHH:MM",
    "month": "a day of the month 1..31 or -1..-31 from the end, optionally THH:MM (e.g. -2T18:00)",
    "week": "a weekday mon..sun, optionally with HH:MM (e.g. fri 22:00)",
    "day": "HH:MM",
}


@dataclass(frozen=True)
class _Point:
    """One end of a window as written: the fields its rule uses, and a wall-clock time."""

    year: int = 0
    month: int = 0
    day: int = 0  # day of month; negative counts from the month's end
    weekday: int = 0
    hour: int = 0
    minute: int = 0
    end_of_day: bool = False  # an end written without a time: the day is included


@dataclass(frozen=True)
class Rule(Generic[W]):
    """A window checked and parsed: its zone and its two ends."""

    window: W
    zone: ZoneInfo
    start: _Point
    end: _Point


# -- parsing --------------------------------------------------------------------------------


def _hm(m: re.Match[str], *, is_end: bool, required: bool = False) -> tuple[int, int, bool]:
    h, mi = m.group("h"), m.group("mi")
    if h is None:
        if required:
            raise ValueError("needs a time HH:MM")
        return 0, 0, is_end
    hour, minute = int(h), int(mi)
    if minute > 59 or hour > 24 or (hour == 24 and (minute or not is_end)):
        raise ValueError(f"{h}:{mi} is not a time of day (00:00 to 23:59; 24:00 ends a day)")
    if hour == 24:  # "until 24:00" is the end of that day
        return 0, 0, True
    return hour, minute, False


def _point(every: str, text: str, *, is_end: bool) -> _Point:
    s = str(text).strip()
    if every == "once":
        if (m := _ONCE.match(s)) is None:
            raise ValueError(f"{text!r} is not a date")
        h, mi, eod = _hm(m, is_end=is_end)
        p = _Point(year=int(m["y"]), month=int(m["mo"]), day=int(m["d"]), hour=h, minute=mi,
                   end_of_day=eod)
        date(p.year, p.month, p.day)  # raises ValueError for 2026-02-30
        return p
    if every == "year":
        if (m := _YEAR.match(s)) is None:
            raise ValueError(f"{text!r} is not a month-day")
        h, mi, eod = _hm(m, is_end=is_end)
        mo, d = int(m["mo"]), int(m["d"])
        if not 1 <= mo <= 12 or not 1 <= d <= calendar.monthrange(2024, mo)[1]:
            raise ValueError(f"{text!r}: no such day in a year")
        return _Point(month=mo, day=d, hour=h, minute=mi, end_of_day=eod)
    if every == "month":
        if (m := _MONTH.match(s)) is None:
            raise ValueError(f"{text!r} is not a day of the month")
        h, mi, eod = _hm(m, is_end=is_end)
        d = int(m["d"])
        if d == 0 or not -31 <= d <= 31:
            raise ValueError(f"{text!r}: the day must be 1..31, or -1..-31 from the month's end")
        return _Point(day=d, hour=h, minute=mi, end_of_day=eod)
    if every == "week":
        if (m := _WEEK.match(s)) is None:
            raise ValueError(f"{text!r} is not a weekday")
        name = m["dow"].lower()
        if name in _DAYS:
            wd = _DAYS.index(name)
        elif name in _FULL_DAYS:
            wd = _FULL_DAYS.index(name)
        else:
            raise ValueError(f"{m['dow']!r} is not a weekday")
        h, mi, eod = _hm(m, is_end=is_end)
        return _Point(weekday=wd, hour=h, minute=mi, end_of_day=eod)
    if every == "day":
        if (m := _DAY.match(s)) is None:
            raise ValueError(f"{text!r} is not a time")
        h, mi, eod = _hm(m, is_end=is_end, required=True)
        return _Point(hour=h, minute=mi, end_of_day=eod)
    raise ValueError(f"unknown rule every={every!r} (use once, day, week, month or year)")


def parse(b: W) -> Rule[W]:
    """Check a window as written; ValueError says which field and the format it needs."""
    every = str(b.every)
    business = bool(getattr(b, "business_days", False))
    if business and every != "month":
        raise ValueError(f"blackout {b.name!r}: business_days only applies to every: month")
    try:
        zone = ZoneInfo(b.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"blackout {b.name!r}: unknown time zone {b.timezone!r} "
                         "(use an IANA name like Europe/London or America/New_York)") from None
    points = []
    for field, text, is_end in (("start", b.start, False), ("end", b.end, True)):
        try:
            points.append(_point(every, text, is_end=is_end))
        except ValueError as e:
            raise ValueError(f"blackout {b.name!r} {field}: {e} (every: {every} takes "
                             f"{_FORMATS.get(every, '?')})") from None
    rule = Rule(b, zone, points[0], points[1])
    if every == "once":
        start, end = span(rule, None)
        if end <= start:
            raise ValueError(f"blackout {b.name!r}: end {b.end} is not after start {b.start}")
    elif every == "day" and points[0] == points[1]:
        raise ValueError(f"blackout {b.name!r}: start and end are the same time")
    return rule


def validate(b: Window) -> None:
    """For the plan model's validator: raise ValueError naming the problem and the fix."""
    parse(b)


# -- resolving ------------------------------------------------------------------------------


def _instant(naive: datetime, zone: ZoneInfo, *, latest: bool) -> datetime:
    """A local wall-clock time as a UTC instant, widening the window across DST changes."""
    early = naive.replace(tzinfo=zone, fold=0)
    late = naive.replace(tzinfo=zone, fold=1)
    if early.utcoffset() == late.utcoffset():
        return early.astimezone(UTC)
    exists = early.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == naive
    if not exists:
        # In the spring-forward gap: fold=0 keeps the old offset, which lands the time after
        # the jump (01:30 that never happened starts at 02:30), as cron does.
        return early.astimezone(UTC)
    # Repeated in the fall-back hour: the earlier start and the later end keep the whole window.
    return (late if latest else early).astimezone(UTC)


def _business_days(year: int, month: int) -> list[date]:
    last = calendar.monthrange(year, month)[1]
    return [d for d in (date(year, month, i) for i in range(1, last + 1)) if d.weekday() < 5]


def _month_day(year: int, month: int, day: int, business: bool) -> date:
    if business:
        days = _business_days(year, month)
        i = max(-len(days), min(day, len(days)))
        return days[i - 1] if i > 0 else days[i]
    last = calendar.monthrange(year, month)[1]
    # Day 31 in a 30-day month is its last day: "the 31st" means "the month's end" there.
    return date(year, month, min(day, last)) if day > 0 else date(year, month,
                                                                   max(1, last + 1 + day))


def _add_months(year: int, month: int, n: int) -> tuple[int, int]:
    k = year * 12 + (month - 1) + n
    return k // 12, k % 12 + 1


def _day_of(rule: Rule[Any], p: _Point, anchor: date | None, shift: int) -> date:
    """The date of point `p` in the period of `anchor`, moved `shift` periods on."""
    every = str(rule.window.every)
    if every == "once":
        return date(p.year, p.month, p.day)
    assert anchor is not None
    if every == "day":
        return anchor + timedelta(days=shift)
    if every == "week":
        monday = anchor - timedelta(days=anchor.weekday()) + timedelta(weeks=shift)
        return monday + timedelta(days=p.weekday)
    if every == "month":
        y, m = _add_months(anchor.year, anchor.month, shift)
        return _month_day(y, m, p.day, bool(getattr(rule.window, "business_days", False)))
    y = anchor.year + shift  # year
    return date(y, p.month, min(p.day, calendar.monthrange(y, p.month)[1]))  # 02-29 -> 02-28


def _naive(rule: Rule[Any], p: _Point, anchor: date | None, shift: int) -> datetime:
    d = _day_of(rule, p, anchor, shift)
    if p.end_of_day:
        return datetime.combine(d + timedelta(days=1), dtime())
    return datetime.combine(d, dtime(p.hour, p.minute))


def span(rule: Rule[Any], anchor: date | None) -> tuple[datetime, datetime]:
    """The occurrence that starts in `anchor`'s period, as UTC instants."""
    start = _naive(rule, rule.start, anchor, 0)
    end = _naive(rule, rule.end, anchor, 0)
    if end <= start and rule.window.every != "once":
        end = _naive(rule, rule.end, anchor, 1)  # crosses midnight / week / month / year end
    return (_instant(start, rule.zone, latest=False), _instant(end, rule.zone, latest=True))


def anchors(rule: Rule[Any], first: date, last: date) -> Iterator[date | None]:
    """One date in every period whose occurrence can overlap [first, last] (local dates)."""
    every = rule.window.every
    if every == "once":
        yield None
        return
    # Start one period early: the occurrence that began then may still be running.
    if every == "day":
        d, step = first - timedelta(days=1), None
    elif every == "week":
        d, step = first - timedelta(weeks=1), None
    elif every == "month":
        y, m = _add_months(first.year, first.month, -1)
        d, step = date(y, m, 1), "month"
    else:
        d, step = date(first.year - 1, 1, 1), "year"
    while d <= last:
        yield d
        if step is None:
            d += timedelta(days=1 if every == "day" else 7)
        elif step == "month":
            y, m = _add_months(d.year, d.month, 1)
            d = date(y, m, 1)
        else:
            d = date(d.year + 1, 1, 1)


def spans(rule: Rule[Any], start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
    """The occurrences of one rule that overlap [start, end), as (start, end) UTC instants."""
    first = start.astimezone(rule.zone).date()
    last = end.astimezone(rule.zone).date()
    for anchor in anchors(rule, first, last):
        s, e = span(rule, anchor)
        if s < end and e > start:
            yield s, e
