"""Evidence and progress are listeners of the drill, and a listener that raises is contained
(issue 13): it is named in the outcome's warnings and switched off; the drill goes on, rolls
back when it must, and keeps its verdict and its evidence. Through the runner seam (fast)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from drkit import drill, evidence
from drkit.config import load_plan
from drkit.errors import RunFailed
from drkit.evidence import recorder
from tests.drill.fake_runner import FakeRunner, Step, green_smoke
from tests.drill.test_drill_seam import plan_in

HOOKS = ("drill_started", "phase_started", "phase_finished", "task_finished", "clock_started",
         "clock_stopped", "note", "drill_finished")


def signed_plan(tmp: Path) -> Any:
    """The seam's plan, with an evidence signing key (a drill then seals a record)."""
    tmp.mkdir(parents=True, exist_ok=True)
    plan_in(tmp)
    evidence.generate_keypair(tmp / "keys" / "evidence.key")
    data = yaml.safe_load((tmp / "drkit.yml").read_text())
    data["evidence"]["signing_key"] = "keys/evidence.key"
    (tmp / "drkit.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    return load_plan(tmp / "drkit.yml")


class Raising(drill.DrillListener):
    """Raises in every hook (a progress writer whose terminal went away)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattribute__(self, name: str) -> Any:
        if name in HOOKS:
            def hook(*_a: Any) -> None:
                object.__getattribute__(self, "calls").append(name)
                raise OSError(5, f"Input/output error in {name}")
            return hook
        return object.__getattribute__(self, name)


class Heard(drill.DrillListener):
    def __init__(self) -> None:
        self.finished: list[drill.DrillOutcome] = []

    def drill_finished(self, outcome: drill.DrillOutcome) -> None:
        self.finished.append(outcome)


def green() -> FakeRunner:
    return FakeRunner({"smoke": Step(stats={"drkit_smoke": green_smoke(after_s=0.2)})})


def test_a_raising_listener_loses_neither_the_verdict_nor_the_evidence(tmp_path: Path) -> None:
    quiet_plan = signed_plan(tmp_path / "quiet")
    quiet = drill.run_drill(quiet_plan, "region-failover", "staging", runner=green())
    broken = Raising()
    plan = signed_plan(tmp_path / "broken")
    o = drill.run_drill(plan, "region-failover", "staging", runner=green(), listener=broken)
    # The same verdict, phases and reasons as with a listener that works.
    assert o.verdict == quiet.verdict and o.exit_code == quiet.exit_code
    assert [(p.name, p.status) for p in o.phases] == [(p.name, p.status) for p in quiet.phases]
    assert o.reasons == quiet.reasons and o.rto_s is not None
    # Called once (its first hook raised), then switched off, and named.
    assert broken.calls == ["drill_started"]
    assert o.warnings == ("progress listener Raising failed in drill_started and was switched "
                          "off: OSError: [Errno 5] Input/output error in drill_started",)
    # The evidence was sealed with the verdict, and the summary says the same.
    assert o.evidence_id is not None
    store = evidence.open_store(plan.model.evidence.store, plan=plan)
    record = evidence.load_record(store, o.evidence_id)
    assert record.verdict == str(o.verdict)
    assert o.artifacts_dir is not None
    summary = json.loads((o.artifacts_dir / "summary.json").read_text())
    assert summary["verdict"] == str(o.verdict) and summary["warnings"] == list(o.warnings)
    assert summary["evidence"] == {"id": o.evidence_id}


def test_a_listener_raising_when_the_clock_starts_does_not_skip_the_rollback(
        tmp_path: Path) -> None:
    """The rollback decision rests on the drill's own record of the fault, not on a listener."""

    class ClockBroken(drill.DrillListener):
        def clock_started(self, at: Any) -> None:
            raise RuntimeError("no terminal")

    runner = FakeRunner({"smoke": Step(stats={"drkit_smoke": green_smoke()}),
                         "promote-data": Step(tasks=(("Promote", "failed", "x"),))})
    o = drill.run_drill(plan_in(tmp_path), "region-failover", "staging", runner=runner,
                        options=drill.DrillOptions(evidence=False), listener=ClockBroken())
    assert runner.runs[-1] == ["rollback"]
    assert o.verdict == drill.Verdict.FAIL and o.clock_started_at is not None
    assert any("ClockBroken failed in clock_started" in w for w in o.warnings), o.warnings


def test_a_seal_that_fails_is_contained_and_the_record_recovered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The evidence recorder is a listener: its failure is a warning in the outcome (verdict
    kept, summary written, the caller's listener still told), and the record it left open is
    sealed as interrupted later, so nothing is lost."""

    def refuse(self: Any, verdict: str, summary: Any) -> Any:
        raise RunFailed("the evidence store refused the write (disk full)")

    plan = signed_plan(tmp_path)
    with monkeypatch.context() as m:
        m.setattr(evidence.Recorder, "seal", refuse)
        heard = Heard()
        o = drill.run_drill(plan, "region-failover", "staging", runner=green(), listener=heard)
    assert o.verdict == drill.Verdict.INCONCLUSIVE  # no canary here: RPO not measured
    assert o.evidence_id is None
    assert any(w.startswith("evidence recorder (record ") and "disk full" in w
               and "drkit drill recover" in w for w in o.warnings), o.warnings
    assert heard.finished == [o]
    assert o.artifacts_dir is not None
    summary = json.loads((o.artifacts_dir / "summary.json").read_text())
    assert summary["verdict"] == "inconclusive" and summary["warnings"] == list(o.warnings)
    store = evidence.open_store(plan.model.evidence.store, plan=plan)
    left_open = [n.removesuffix(".json") for n in store.list("open") if n.endswith(".json")]
    assert len(left_open) == 1 and f"record {left_open[0]} stays open" in " ".join(o.warnings)
    # Once its writer is gone (here: this test process, declared gone), the next drill or
    # `drkit drill recover` seals it as interrupted.
    monkeypatch.setattr(recorder, "pid_alive", lambda *_a: False)
    sealed = evidence.recover_interrupted(store, plan=plan).sealed
    assert [r.id for r in sealed] == left_open
    assert evidence.load_record(store, sealed[0].id).verdict == "interrupted"
