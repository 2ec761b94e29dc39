"""The judge (drkit.drill.judge): a pure function of observations. Property-based: hundreds of
generated observation sets, and no PASS without every observation the verdict needs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from drkit.drill.judge import (
    DataObservation,
    FlowObservation,
    Mode,
    Observations,
    PhaseObservation,
    PhaseStatus,
    SmokeObservation,
    Verdict,
    judge,
)

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
FLOWS = ("authorize", "capture", "refund", "balance")
NAMES = ("preflight", "inject-fault", "promote-data", "smoke", "failback")


def good(mode: Mode = Mode.DRILL, **kw: object) -> Observations:
    status = PhaseStatus.CHECKED if mode == Mode.DRY_RUN else PhaseStatus.OK
    base: dict[str, object] = dict(
        mode=mode,
        phases=tuple(PhaseObservation(n, status, failback=n == "failback") for n in NAMES),
        flows=FLOWS, rto_target_s=30.0, rpo_target_s=0.0, clock_started_at=T0,
        smoke=SmokeObservation("https://e", tuple(FlowObservation(f, True) for f in FLOWS),
                               T0 + timedelta(seconds=4.2)),
        data=DataObservation(100, 100, 0, 0.0, True), canary=True)
    base.update(kw)
    return Observations(**base)  # type: ignore[arg-type]


def test_a_complete_observed_drill_passes_and_says_what_was_observed() -> None:
    j = judge(good())
    assert j.verdict == Verdict.PASS and j.exit_code == 0 and j.missing == ()
    assert j.rto_s == 4.2 and j.clock_stopped_at == T0 + timedelta(seconds=4.2)
    assert "4 flows observed green through https://e at 2026-11-30T09:00:04.200Z" in j.observed
    assert j.reasons == ("all flows green in 4.20s (target 30s), 0 payments lost",)


def test_rto_missed_is_named_with_the_figures() -> None:
    j = judge(good(rto_target_s=3.0))
    assert j.verdict == Verdict.FAIL and j.exit_code == 1
    assert any(r.startswith("RTO missed: 4.20s > target 3s") for r in j.reasons)
    assert [f.check for f in j.findings] == ["rto"]


def test_flows_not_reached_after_a_failure_are_not_blamed() -> None:
    smoke = SmokeObservation("https://e", (
        FlowObservation("authorize", True), FlowObservation("refund", False, "409"),
        FlowObservation("balance", False, "not run: refund failed in this round",
                        reached=False)), None)
    j = judge(good(smoke=smoke, flows=("authorize", "refund", "balance")))
    assert j.verdict == Verdict.FAIL
    assert "smoke flows failed: refund" in j.reasons
    assert "smoke flows not reached after the failure: balance" in j.reasons
    assert any("did not recover" in r for r in j.reasons)
    assert [f.check for f in j.findings if f.check.startswith("smoke:")] == ["smoke:refund"]


def test_a_flow_not_run_is_said_by_its_value_not_by_its_words() -> None:
    """issue 13: "not run" is FlowObservation.reached, never read back from the detail: a
    flow that ran and failed with a detail that merely starts with those words is blamed, and
    a flow marked not reached is not, whatever its detail says."""
    smoke = SmokeObservation("https://e", (
        FlowObservation("authorize", True),
        FlowObservation("refund", False, "not run: only looks like it"),
        FlowObservation("balance", False, "", reached=False)), None)
    j = judge(good(smoke=smoke, flows=("authorize", "refund", "balance")))
    assert "smoke flows failed: refund" in j.reasons
    assert "smoke flows not reached after the failure: balance" in j.reasons
    assert [f.check for f in j.findings if f.check.startswith("smoke:")] == ["smoke:refund"]
    # Not reached with nothing before it failing: not observed (missing), never a pass.
    alone = SmokeObservation("https://e", (FlowObservation("authorize", True),
                                           FlowObservation("balance", False, reached=False)),
                             T0 + timedelta(seconds=4.2))
    j = judge(good(smoke=alone, flows=("authorize", "balance")))
    assert j.verdict != Verdict.PASS
    assert "smoke flows not reached after the failure: balance" in j.missing


def test_lost_payments_miss_a_zero_rpo_target() -> None:
    j = judge(good(data=DataObservation(100, 97, 3, 0.0, True)))
    assert j.verdict == Verdict.FAIL
    assert any("RPO missed" in r and "3 acknowledged payments lost" in r for r in j.reasons)


def test_unbalanced_ledger_fails() -> None:
    j = judge(good(data=DataObservation(100, 100, 0, 0.0, False)))
    assert any("ledger does not balance" in r for r in j.reasons)


def test_rpo_target_without_a_measurement_is_inconclusive() -> None:
    """Case 3: no canary (no entry point) leaves RPO unmeasured."""
    j = judge(good(data=None, canary=False))
    assert j.verdict == Verdict.INCONCLUSIVE and j.exit_code == 1
    assert any("RPO not measured: no canary ran" in m for m in j.missing)


def test_no_smoke_results_is_no_rto() -> None:
    """Case 2: the smoke phase ended, nothing was observed green: no RTO, inconclusive."""
    j = judge(good(smoke=None))
    assert j.verdict == Verdict.INCONCLUSIVE and j.rto_s is None
    assert any(m.startswith("RTO not measured") for m in j.missing)


def test_preflight_error_in_a_check_is_inconclusive_not_ready() -> None:
    """Case 1: a readiness check whose preflight never ran."""
    j = judge(Observations(Mode.CHECK, (PhaseObservation(
        "preflight", PhaseStatus.ERROR, "did not run: [ERROR]: couldn't resolve module",
        reached=False),)))
    assert j.verdict == Verdict.INCONCLUSIVE
    assert "phase preflight did not run: [ERROR]: couldn't resolve module" in j.missing
    # "not run" is the typed `reached`, never read back from the message's words (issue 13):
    # a phase that started and died is "did not complete", whatever its message says.
    j = judge(Observations(Mode.CHECK, (PhaseObservation(
        "preflight", PhaseStatus.ERROR, "did not run: text that only looks like it"),)))
    assert "phase preflight did not complete or its effect was not observed: did not run: " \
        "text that only looks like it" in j.missing


def test_skipped_preflight_is_never_ready() -> None:
    j = judge(Observations(Mode.CHECK, (PhaseObservation("preflight", PhaseStatus.SKIPPED),)))
    assert j.verdict == Verdict.INCONCLUSIVE


# --------------------------------------------------------------------------- properties

statuses = st.sampled_from(list(PhaseStatus))
maybe_time = st.one_of(st.none(), st.integers(0, 120_000).map(
    lambda ms: T0 + timedelta(milliseconds=ms)))
flow_obs = st.builds(FlowObservation, st.sampled_from(FLOWS), st.booleans(),
                     st.sampled_from(["", "500", "not run: x failed"]), st.booleans())
smokes = st.one_of(st.none(), st.builds(
    SmokeObservation, st.just("https://e"),
    st.lists(flow_obs, max_size=5, unique_by=lambda f: f.flow).map(tuple), maybe_time))
data = st.one_of(st.none(), st.builds(
    DataObservation, st.integers(0, 50), st.integers(0, 50), st.integers(0, 5),
    st.floats(0, 10, allow_nan=False), st.sampled_from([True, False, None])))
observations = st.builds(
    Observations,
    mode=st.sampled_from(list(Mode)),
    phases=st.lists(st.builds(PhaseObservation, st.sampled_from(NAMES), statuses,
                              st.just(""), st.just(()), st.booleans()),
                    max_size=6).map(tuple),
    flows=st.lists(st.sampled_from(FLOWS), max_size=4, unique=True).map(tuple),
    rto_target_s=st.one_of(st.none(), st.floats(0, 60, allow_nan=False)),
    rpo_target_s=st.one_of(st.none(), st.floats(0, 5, allow_nan=False)),
    clock_started_at=maybe_time, smoke=smokes, data=data, after_failback=data,
    aborted=st.one_of(st.none(), st.just("SIGHUP")),
    rollback=st.one_of(st.none(), st.builds(PhaseObservation, st.just("rollback"), statuses)),
    canary=st.booleans(),
)


@settings(max_examples=600, deadline=None)
@given(observations)
def test_no_pass_without_every_observation_it_needs(obs: Observations) -> None:
    j = judge(obs)
    assert j.verdict in set(Verdict) and j.reasons
    assert j.exit_code == {Verdict.PASS: 0, Verdict.FAIL: 1, Verdict.INCONCLUSIVE: 1,
                           Verdict.ABORTED: 3}[j.verdict]
    if j.verdict == Verdict.INCONCLUSIVE:
        assert j.missing  # says what is missing
    if j.verdict != Verdict.PASS:
        return
    assert obs.aborted is None and obs.rollback is None and not j.missing
    allowed = {PhaseStatus.OK} | ({PhaseStatus.CHECKED} if obs.mode == Mode.DRY_RUN else set())
    assert obs.phases and all(p.status in allowed for p in obs.phases)
    if obs.mode == Mode.DRILL:
        # Every required flow observed green, the clock stopped by that observed moment.
        assert obs.smoke is not None and obs.smoke.green_at is not None
        seen = {f.flow for f in obs.smoke.flows if f.passed}
        assert set(obs.flows) <= seen and all(f.passed for f in obs.smoke.flows)
        assert obs.clock_started_at is not None
        assert j.rto_s == round((obs.smoke.green_at - obs.clock_started_at).total_seconds(), 3)
        if obs.rto_target_s is not None:
            assert j.rto_s <= obs.rto_target_s
        if obs.rpo_target_s is not None:  # RPO measured wherever the plan sets a target
            assert obs.data is not None and obs.data.rpo_s <= obs.rpo_target_s
            assert obs.data.ledger_balanced is True
        assert any("flows observed green through" in o for o in j.observed)


@settings(max_examples=300, deadline=None)
@given(observations)
def test_taking_an_observation_away_never_makes_a_pass(obs: Observations) -> None:
    """Removing the smoke, the canary's data or the clock's start never turns a non-pass into
    a pass, and turns a drill's pass into something else."""
    from dataclasses import replace

    before = judge(obs).verdict
    for less in (replace(obs, smoke=None), replace(obs, data=None),
                 replace(obs, clock_started_at=None)):
        after = judge(less).verdict
        if before != Verdict.PASS:
            assert after != Verdict.PASS or less == obs
        elif obs.mode == Mode.DRILL and less != obs and (
                less.data is not None or obs.rpo_target_s is not None or less.smoke is None
                or less.clock_started_at is None):
            assert after != Verdict.PASS
