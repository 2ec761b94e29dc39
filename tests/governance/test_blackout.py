"""Blackout windows: each rule kind, time zones with DST, midnight and month-end crossings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from drkit.errors import BadInput, PlanError
from drkit.governance import blackout


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def name_at(plan, at: datetime) -> str | None:  # noqa: ANN001
    w = blackout.active_window(plan, at)
    return w.name if w else None


def test_once_date_range_includes_its_last_day(plan_with):
    plan = plan_with("""
blackouts:
  - {name: freeze, start: "2026-12-20", end: "2026-12-27"}
""")
    assert name_at(plan, utc(2026, 12, 19, 23, 59)) is None
    assert name_at(plan, utc(2026, 12, 20, 0, 0)) == "freeze"
    assert name_at(plan, utc(2026, 12, 27, 23, 59)) == "freeze"  # the end date is included
    assert name_at(plan, utc(2026, 12, 28, 0, 0)) is None


def test_daily_window_crossing_midnight(plan_with):
    plan = plan_with("""
blackouts:
  - {name: nightly batch, every: day, start: "23:30", end: "00:30"}
""")
    assert name_at(plan, utc(2026, 5, 4, 23, 29)) is None
    assert name_at(plan, utc(2026, 5, 4, 23, 45)) == "nightly batch"
    assert name_at(plan, utc(2026, 5, 5, 0, 15)) == "nightly batch"  # the day after it started
    assert name_at(plan, utc(2026, 5, 5, 0, 30)) is None  # the end is exclusive


def test_weekly_window_follows_local_time_across_dst(plan_with):
    # New York: EST (UTC-5) in January, EDT (UTC-4) in July; the window is wall-clock time.
    plan = plan_with("""
blackouts:
  - {name: weekend settlement, every: week, start: "sat 22:00", end: "sun 02:00",
     timezone: America/New_York}
""")
    # Saturday 2026-01-10 21:30 EST = 02:30Z Sunday: outside. 22:30 EST = 03:30Z: inside.
    assert name_at(plan, utc(2026, 1, 11, 2, 30)) is None
    assert name_at(plan, utc(2026, 1, 11, 3, 30)) == "weekend settlement"
    # Same UTC clock in July is an hour later locally: 02:30Z = Saturday 22:30 EDT, inside.
    assert name_at(plan, utc(2026, 7, 12, 2, 30)) == "weekend settlement"
    assert name_at(plan, utc(2026, 7, 12, 6, 0)) is None  # Sunday 02:00 EDT: over
    assert name_at(plan, utc(2026, 7, 12, 5, 59)) == "weekend settlement"
    assert name_at(plan, utc(2026, 7, 15, 3, 0)) is None  # a Tuesday


def test_monthly_window_crossing_the_month_end_and_the_refusal(plan_with):
    plan = plan_with("""
blackouts:
  - {name: month-end close, every: month, start: "-2T18:00", end: "1T06:00"}
""")
    # November has 30 days: -2 is the 29th.
    assert name_at(plan, utc(2026, 11, 29, 17, 59)) is None
    assert name_at(plan, utc(2026, 11, 29, 18, 0)) == "month-end close"
    assert name_at(plan, utc(2026, 12, 1, 5, 59)) == "month-end close"
    assert name_at(plan, utc(2026, 12, 1, 6, 0)) is None
    # February 2028 (leap year) has 29 days: -2 is the 28th.
    assert name_at(plan, utc(2028, 2, 28, 19, 0)) == "month-end close"
    assert name_at(plan, utc(2028, 2, 27, 19, 0)) is None
    with pytest.raises(BadInput) as e:
        blackout.check(plan, utc(2026, 11, 30, 12, 0))
    assert str(e.value) == ("inside blackout window 'month-end close' (until "
                            "2026-12-01T06:00+00:00); pass --override-blackout REASON to run "
                            "anyway")
    assert e.value.exit_code == 2


def test_monthly_business_days(plan_with):
    # The last two business days of the month through the first one, London time.
    plan = plan_with("""
blackouts:
  - {name: close, every: month, business_days: true, start: "-2", end: "1",
     timezone: Europe/London}
""")
    # January 2026 ends on a Saturday: the last business days are Thu 29 and Fri 30;
    # February's first business day is Monday the 2nd.
    assert name_at(plan, utc(2026, 1, 28, 23, 59)) is None
    assert name_at(plan, utc(2026, 1, 29, 0, 0)) == "close"
    assert name_at(plan, utc(2026, 1, 31, 12, 0)) == "close"  # the weekend in between
    assert name_at(plan, utc(2026, 2, 2, 23, 0)) == "close"
    assert name_at(plan, utc(2026, 2, 3, 0, 0)) is None
    # July 2026 is BST (UTC+1): Thu 30 July 00:00 local is 29 July 23:00Z.
    assert name_at(plan, utc(2026, 7, 29, 22, 59)) is None
    assert name_at(plan, utc(2026, 7, 29, 23, 0)) == "close"


def test_yearly_window_crossing_the_year_end_in_its_time_zone(plan_with):
    plan = plan_with("""
blackouts:
  - {name: new year, every: year, start: "12-31T22:00", end: "01-01T06:00",
     timezone: Asia/Tokyo}
  - {name: peak day, every: year, start: "11-27", end: "11-27"}
""")
    # Tokyo is UTC+9: 31 Dec 22:00 JST is 13:00Z; 1 Jan 06:00 JST is 31 Dec 21:00Z.
    assert name_at(plan, utc(2026, 12, 31, 12, 59)) is None
    assert name_at(plan, utc(2026, 12, 31, 13, 0)) == "new year"
    assert name_at(plan, utc(2026, 12, 31, 20, 59)) == "new year"
    assert name_at(plan, utc(2026, 12, 31, 21, 0)) is None
    assert name_at(plan, utc(2027, 11, 27, 12, 0)) == "peak day"
    assert name_at(plan, utc(2027, 11, 28, 0, 0)) is None


def test_dst_changes_never_shorten_a_window(plan_with):
    plan = plan_with("""
blackouts:
  - {name: spring, start: "2026-03-29T00:30", end: "2026-03-29T03:00", timezone: Europe/London}
  - {name: autumn, start: "2026-10-25T01:00", end: "2026-10-25T01:30", timezone: Europe/London}
""")
    # Clocks go forward at 01:00 GMT: 03:00 BST is 02:00Z, so the window lasts 1.5 real hours.
    assert name_at(plan, utc(2026, 3, 29, 0, 29)) is None
    assert name_at(plan, utc(2026, 3, 29, 1, 59)) == "spring"
    assert name_at(plan, utc(2026, 3, 29, 2, 0)) is None
    # 01:00-01:30 happens twice (BST, then GMT): the window covers both, 00:00Z to 01:30Z.
    assert name_at(plan, utc(2026, 10, 24, 23, 59)) is None
    assert name_at(plan, utc(2026, 10, 25, 0, 15)) == "autumn"  # 01:15 BST
    assert name_at(plan, utc(2026, 10, 25, 1, 15)) == "autumn"  # 01:15 GMT, the second time
    assert name_at(plan, utc(2026, 10, 25, 1, 30)) is None


def test_override_with_a_reason_is_allowed_and_recorded(plan_with):
    plan = plan_with("""
blackouts:
  - {name: peak, start: "2026-11-27", end: "2026-11-27"}
""")
    at = utc(2026, 11, 27, 9, 0)
    d = blackout.check(plan, at, "regulator-ordered retest INC-77", operator="alice")
    assert d.allowed and d.overridden and d.window is not None and d.window.name == "peak"
    ev = d.to_evidence()
    assert ev["override_reason"] == "regulator-ordered retest INC-77"
    assert ev["override_by"] == "alice" and ev["checked_at"] == "2026-11-27T09:00:00Z"
    assert ev["inside"]["name"] == "peak" and ev["inside"]["end_utc"] == "2026-11-28T00:00:00Z"
    with pytest.raises(BadInput, match="--override-blackout needs a reason"):
        blackout.check(plan, at, "   ")
    outside = blackout.check(plan, utc(2026, 11, 28, 0, 0))
    assert outside.allowed and not outside.overridden and outside.window is None


def test_next_windows_for_a_schedule(plan_with):
    plan = plan_with("""
blackouts:
  - {name: weekend, every: week, start: "sat", end: "sun"}
  - {name: peak, start: "2026-06-03", end: "2026-06-03"}
""")
    # From Sunday 2026-05-31 noon, 10 days: the running weekend, the peak day, next weekend.
    wins = blackout.next_windows(plan, utc(2026, 5, 31, 12, 0), 10)
    assert [(o.window.name, o.start, o.end) for o in wins] == [
        ("weekend", utc(2026, 5, 30), utc(2026, 6, 1)),
        ("peak", utc(2026, 6, 3), utc(2026, 6, 4)),
        ("weekend", utc(2026, 6, 6), utc(2026, 6, 8)),
    ]
    assert blackout.blocked(wins, utc(2026, 6, 7, 3, 0)).window.name == "weekend"
    assert blackout.blocked(wins, utc(2026, 6, 5, 3, 0)) is None
    assert wins[0].start - timedelta(days=1) < wins[0].end


def test_a_bad_window_is_a_plan_error_with_its_line(tmp_path):
    from .conftest import write_plan

    with pytest.raises(PlanError, match=r"drkit.yml:\d+ blackouts.0: blackout 'close' start: "
                       r"'0': the day must be 1..31, or -1..-31"):
        write_plan(tmp_path, """
blackouts:
  - {name: close, every: month, start: "0", end: "2"}
""")
    with pytest.raises(PlanError, match="unknown time zone 'Europe/Londres'"):
        write_plan(tmp_path, """
blackouts:
  - {name: x, start: "2026-01-01", end: "2026-01-02", timezone: Europe/Londres}
""")
    with pytest.raises(PlanError, match="end 2026-01-01T10:00 is not after start"):
        write_plan(tmp_path, """
blackouts:
  - {name: x, start: "2026-01-01T10:00", end: "2026-01-01T10:00"}
""")
