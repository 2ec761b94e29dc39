"""Issue 19: the recovery clock starts when the fault step issued the fault, never later than
the real effect, and an auditor can see how each end was obtained."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from drkit.config import Plan
from drkit.drill.run import clock_start
from drkit.evidence import LocalStore, load_record, verify
from drkit.evidence.signing import KeyPair
from tests.evidence.conftest import SUMMARY, seal_one

T0 = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)


def iso(d: datetime) -> str:
    return d.isoformat().replace("+00:00", "Z")


class FakeCanary:
    def __init__(self, *failures: tuple[datetime, datetime]) -> None:
        self.failures = list(failures)

    def first_failure(self, after: datetime) -> tuple[datetime, datetime] | None:
        return next((f for f in self.failures if f[0] >= after), None)


def fault(issued: datetime, **kw: object) -> dict[str, object]:
    return {"issued_at": iso(issued), "confirmed_at": iso(issued + timedelta(seconds=0.2)),
            "database_pid": 123, "instances": {"payments-1": 456}, **kw}


def test_the_clock_starts_at_the_fault_steps_own_time() -> None:
    issued = T0 + timedelta(seconds=0.8)
    canary = FakeCanary((issued + timedelta(seconds=0.01), issued + timedelta(seconds=0.05)))
    at, source, first = clock_start("inject-fault", T0, fault(issued), canary)
    assert at == issued
    assert "fault step: issued at" in source and "canary's first failed request" in source
    assert first == canary.failures[0]


def test_without_a_time_from_the_fault_step_the_phase_start_is_used_and_said() -> None:
    for published in (None, {}, {"issued_at": 7}, "2026-11-30T12:00:01Z"):
        at, source, _ = clock_start("inject-fault", T0, published, None)
        assert at == T0 and source.startswith("start of phase inject-fault") \
            and "published no time" in source


def test_a_time_before_the_phase_or_unreadable_is_not_used() -> None:
    for bad in (fault(T0 - timedelta(seconds=1)), {**fault(T0), "issued_at": "yesterday"}):
        at, source, _ = clock_start("inject-fault", T0, bad, None)
        assert at == T0 and "not within the phase" in source


def test_a_fault_step_that_stopped_nothing_does_not_date_the_outage() -> None:
    at, source, _ = clock_start("inject-fault", T0,
                                fault(T0 + timedelta(seconds=1), database_pid=None,
                                      instances={}), None)
    assert at == T0 and "nothing running" in source


def test_a_canary_that_failed_before_the_fault_steps_time_moves_the_clock_back() -> None:
    """Never later than the real effect: the entry point failing earlier means the outage began
    earlier than the step says."""
    issued = T0 + timedelta(seconds=1)
    canary = FakeCanary((T0 + timedelta(seconds=0.1), T0 + timedelta(seconds=0.3)))
    at, source, first = clock_start("inject-fault", T0, fault(issued), canary)
    assert at == T0 and "came before the fault step's time" in source
    assert first == canary.failures[0]


def test_canary_failures_before_the_phase_are_not_the_outage() -> None:
    issued = T0 + timedelta(seconds=1)
    canary = FakeCanary((T0 - timedelta(seconds=5), T0 - timedelta(seconds=4)))
    at, _, first = clock_start("inject-fault", T0, fault(issued), canary)
    assert at == issued and first is None


def test_the_records_clock_keeps_its_sources_and_older_records_their_form(
        plan: Plan, store: LocalStore, keys: KeyPair, tmp_path: Path) -> None:
    """The sources are in the sealed record when the drill gave them, and it verifies; a record
    without them (every record sealed before issue 19) has the clock it always had."""
    clock = {**SUMMARY["clock"], "started_source": "phase inject-fault's fault step: issued at "
             "2025-03-01T02:00:03Z", "stopped_source": "the smoke phase's first round",
             "canary_first_failure_at": "2025-03-01T02:00:03.040Z"}
    with_sources = seal_one(store, plan, tmp_path, summary={**SUMMARY, "clock": clock})
    plain = seal_one(store, plan, tmp_path)
    assert verify(store, keys.public).ok
    got = load_record(store, with_sources.id).to_dict()["clock"]
    assert got["started_source"].startswith("phase inject-fault's fault step")
    assert got["stopped_source"] == "the smoke phase's first round"
    assert got["canary_first_failure_at"] == "2025-03-01T02:00:03.040Z"
    assert set(load_record(store, plain.id).to_dict()["clock"]) == {"started_at", "stopped_at"}

