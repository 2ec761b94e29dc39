"""The drill's domain values are typed and frozen (issue 13): an outcome cannot change once
the run handed it out, the smoke step's results are typed (a flow not run is a value, not a
reading of its detail's words), and the JSON the evidence and `--json` carry keeps its shape."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drkit import drill
from drkit.drill import judge
from drkit.drill.model import OutcomeBuilder, Published, SmokeRun
from drkit.flows import FlowResult, FlowStatus, Reconciliation, SmokeOutcome
from tests.drill.fake_runner import FakeRunner, Step
from tests.drill.test_drill_seam import plan_in

T0 = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)


def reconciliation(lost: int = 0, balanced: bool | None = True) -> Reconciliation:
    return Reconciliation(
        run_id="r1", fault_at=T0, acked_count=10, present_count=10 - lost, acked_digest="a",
        present_digest="b", missing=tuple(f"canary:r1:{i:08d}" for i in range(lost)),
        lost_count=lost, lost_after_fault=0, unacked_present=0, rpo_s=0.5 if lost else 0.0,
        newest_lost_acked_at=None, last_durable_acked_at=T0, ledger_balanced=balanced,
        ledger_debits_cents=100, ledger_credits_cents=100, ledger_entries=2)


def builder() -> OutcomeBuilder:
    return OutcomeBuilder(id="r1", scenario="region-failover", environment="lab",
                          started_at=T0, targets=drill.Targets(rto_s=30, rpo_s=0))


def test_the_builder_and_the_outcome_have_the_same_fields() -> None:
    """build() names every field: one added to DrillOutcome but not to the builder (or the
    other way round) fails here, not as a value silently left at its default."""
    assert {f.name for f in dataclasses.fields(OutcomeBuilder)} == \
        {f.name for f in dataclasses.fields(drill.DrillOutcome)}
    b = builder()
    b.reasons.append("x")
    b.phases.append(drill.PhaseResult("preflight", drill.PhaseStatus.OK, T0, T0))
    o = b.build()
    assert o.reasons == ("x",) and o.phases[0].name == "preflight" and o.ended_at == T0


def test_an_outcome_handed_out_cannot_be_changed() -> None:
    b = builder()
    o = b.build()
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.verdict = drill.Verdict.PASS  # type: ignore[misc]
    with pytest.raises(AttributeError):
        o.reasons.append("later")  # type: ignore[attr-defined]
    # What the run adds afterwards goes into the next outcome, never into one already out.
    b.reasons.append("later")
    b.evidence_id = "ev1"
    assert o.reasons == () and o.evidence_id is None
    assert b.build().reasons == ("later",) and b.build().evidence_id == "ev1"


def test_the_outcome_the_caller_gets_is_frozen_and_equal_to_the_one_listeners_heard(
        tmp_path: Path) -> None:
    heard: list[drill.DrillOutcome] = []

    class Heard(drill.DrillListener):
        def drill_finished(self, outcome: drill.DrillOutcome) -> None:
            heard.append(outcome)

    o = drill.run_drill(plan_in(tmp_path), "region-failover", "staging",
                        options=drill.DrillOptions(evidence=False), runner=FakeRunner(),
                        listener=Heard())
    assert heard == [o] and isinstance(o.phases, tuple) and isinstance(o.reasons, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.phases = ()  # type: ignore[misc]


def test_the_json_shape_is_the_published_one() -> None:
    """The typed smoke results, reconciliation and preflight facts give the same JSON the
    drill wrote when it kept them as published dicts."""
    published_smoke = {"entry": "https://e", "green": False, "started_at": "2026-11-23T05:00:00Z",
                       "green_at": None, "attempts": 3,
                       "results": [{"flow": "authorize", "status": "fail", "duration_s": 0.012345,
                                    "detail": "503"},
                                   {"flow": "refund", "status": "fail", "duration_s": 0.0,
                                    "detail": "not run: authorize failed in this round"}],
                       "not_reached": ["refund"]}
    facts = {"replication": [{"state": "streaming", "replay_lag_s": 0.25}],
             "iac_parameters": [], "secondary_instances_healthy": "2"}
    smoke = SmokeRun.published(published_smoke)
    assert smoke is not None
    b = builder()
    b.smoke, b.preflight = smoke.results, Published.of(facts)
    b.reconciliation, b.after_failback = reconciliation(), reconciliation(lost=1)
    data = b.build().to_json()
    assert data["smoke"] == published_smoke["results"]
    assert data["preflight"] == facts
    assert data["reconciliation"] == reconciliation().to_json()
    assert data["after_failback"]["lost_count"] == 1
    assert data["reconciliation"]["ledger"] == {"balanced": True, "debits_cents": 100,
                                                "credits_cents": 100, "entries": 2}
    # JSON all the way down (lists, not tuples, where the record has lists).
    assert json.loads(json.dumps(data)) == data


def test_a_flow_not_run_reaches_the_verdict_as_a_value() -> None:
    """From drkit.flows (a round stops at its first failure) through the smoke action's JSON
    (`not_reached`) to the judge's FlowObservation.reached: never read back from the words."""
    results = (FlowResult("authorize", FlowStatus.FAIL, 0.01, "503"),
               FlowResult("refund", FlowStatus.FAIL, 0.0, "not run: authorize failed in this "
                          "round", reached=False),
               FlowResult("balance", FlowStatus.FAIL, 0.01, "not run: words only"))
    published = {"entry": "https://e", **SmokeOutcome(T0, None, 1, results).to_json()}
    assert published["not_reached"] == ["refund"]
    # Each result's own JSON is unchanged: flow, status, duration_s, detail.
    assert [sorted(r) for r in published["results"]] == \
        [["detail", "duration_s", "flow", "status"]] * 3
    smoke = SmokeRun.published(json.loads(json.dumps(published)))
    assert smoke is not None
    assert [(r.flow, r.reached) for r in smoke.results] == \
        [("authorize", True), ("refund", False), ("balance", True)]
    b = builder()
    b.clock_started_at = T0
    obs = drill.observations(judge.Mode.DRILL, (), set(),
                             ("authorize", "refund", "balance"), b, smoke, aborted=None,
                             rollback=None, canary=False)
    assert obs.smoke is not None
    assert [(f.flow, f.reached) for f in obs.smoke.flows] == \
        [("authorize", True), ("refund", False), ("balance", True)]
    j = judge.judge(obs)
    assert "smoke flows failed: authorize, balance" in j.reasons
    assert "smoke flows not reached after the failure: refund" in j.reasons


def test_a_smoke_run_without_results_or_with_a_bad_time_is_not_observed() -> None:
    assert SmokeRun.published(None) is None
    assert SmokeRun.published({"entry": "https://e", "green_at": "x"}) is None
    s = SmokeRun.published({"entry": "https://e", "green_at": "not a time", "results": []})
    assert s is not None and s.green_at is None and s.results == ()
    s = SmokeRun.published({"entry": "https://e", "green_at": "2026-11-23T05:00:04Z",
                            "results": [{"flow": "authorize", "status": "pass"}]})
    assert s is not None and s.green_at == T0 + timedelta(seconds=4)
    assert s.results[0].passed and s.results[0].reached


def test_published_facts_cannot_be_changed_through_their_json() -> None:
    facts = {"replication": [{"state": "streaming"}]}
    p = Published.of(facts)
    p.to_json()["replication"].clear()
    facts["replication"].clear()
    assert p.to_json() == {"replication": [{"state": "streaming"}]}


def test_a_drill_through_the_seam_keeps_the_preflight_facts_as_published(
        tmp_path: Path) -> None:
    facts = {"replication": [{"state": "streaming", "sync_state": "sync"}],
             "secondary_instances_healthy": "2"}
    runner = FakeRunner({"preflight": Step(stats={"drkit_preflight": facts})})
    o = drill.run_drill(plan_in(tmp_path), "region-failover", "staging",
                        options=drill.DrillOptions(evidence=False), runner=runner)
    assert o.preflight is not None and o.preflight.to_json() == facts
    assert o.artifacts_dir is not None
    summary = json.loads((o.artifacts_dir / "summary.json").read_text())
    assert summary["preflight"] == facts and summary["smoke"] == []
