"""The drill's decisions through its runner seam (issue 11): a fake playbook runner plays what
each phase did, the real orchestration (drkit.drill.run_drill) and judge decide. Fast; the lab
tests (test_drill_lab.py, test_drill_green.py) prove the same with the real runner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from drkit import drill
from drkit.config import load_plan
from tests.drill.fake_runner import FakeRunner, Step, green_smoke

PHASES = ("preflight", "inject-fault", "recreate-stack", "promote-data", "failover-traffic",
          "smoke", "failback")


def plan_in(tmp: Path, *, entry_url: str | None = "https://payments.example.com") -> Any:
    """A plan with a non-lab environment (no canary without a real entry point: entry_url is
    left out unless given) and one tiny playbook per phase."""
    (tmp / "inv.yml").write_text("all: {hosts: {localhost: {ansible_connection: local}}}\n")
    for name in (*PHASES, "rollback"):
        (tmp / f"{name}.yml").write_text(yaml.safe_dump(
            [{"name": name, "hosts": "localhost", "gather_facts": False, "tasks": []}]))
    env: dict[str, Any] = {"inventory": "inv.yml"}
    data = {
        "version": 1, "name": "t", "regions": {"primary": "eu-west-1",
                                               "secondary": "eu-central-1"},
        "environments": {"staging": env},
        "services": {"payments": {"tier": 1, "rto": "30s", "rpo": "0s",
                                  "smoke": ["authorize", "balance"]}},
        "scenarios": {"region-failover": {
            "type": "region-failover", "services": ["payments"],
            "phases": [{"name": n, "playbook": f"{n}.yml",
                        **({"starts_clock": True} if n == "inject-fault" else {}),
                        **({"stops_clock": True} if n == "smoke" else {}),
                        **({"failback": True} if n == "failback" else {})} for n in PHASES],
            "rollback": "rollback.yml"}},
        "evidence": {"store": "./evidence"},
    }
    (tmp / "drkit.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    return load_plan(tmp / "drkit.yml")


def run(tmp: Path, runner: FakeRunner, **opts: Any) -> drill.DrillOutcome:
    return drill.run_drill(plan_in(tmp), "region-failover", "staging",
                           options=drill.DrillOptions(evidence=False, **opts), runner=runner)


def test_pass_needs_green_observed_and_rpo_measured(tmp_path: Path) -> None:
    """Every flow observed green: RTO from the observed green, never the phase's end; but with
    no canary, RPO (target 0s) is not measured: inconclusive, exit 1, saying so."""
    runner = FakeRunner({"smoke": Step(stats={"drkit_smoke": green_smoke(after_s=0.2)})})
    o = run(tmp_path, runner)
    assert o.verdict == drill.Verdict.INCONCLUSIVE and o.exit_code == 1
    assert any("RPO not measured" in m for m in o.missing), o.missing
    assert any("2 flows observed green through https://payments.example.com at" in s
               for s in o.observed), o.observed
    smoke = next(p for p in o.phases if p.name == "smoke")
    assert o.clock_stopped_at is not None and smoke.ended_at is not None
    assert o.clock_stopped_at < smoke.ended_at  # the observed green, not the phase's end
    assert o.to_json()["rto"]["met"] is True and o.to_json()["rpo"]["met"] is None


def test_no_smoke_observed_means_no_rto(tmp_path: Path) -> None:
    """Case 2: the smoke phase ended ok but published no flows (no entry point): no RTO, not
    'all flows green'."""
    o = run(tmp_path, FakeRunner())
    assert o.verdict == drill.Verdict.INCONCLUSIVE
    assert o.rto_s is None and o.clock_stopped_at is None
    assert any("smoke flows not observed: authorize, balance" in m for m in o.missing)
    assert any(m.startswith("RTO not measured") for m in o.missing)
    assert not any("all flows green" in r for r in o.reasons)


def test_preflight_that_never_ran_is_an_error_not_a_pass(tmp_path: Path) -> None:
    """Case 1 through the seam: ansible-playbook died before the first play."""
    runner = FakeRunner({"preflight": Step(dies_before=True)})
    o = drill.check(plan_in(tmp_path), "staging", runner=runner)
    assert o.verdict == drill.Verdict.INCONCLUSIVE and o.exit_code == 1
    assert [(p.name, str(p.status)) for p in o.phases] == [("preflight", "error")]
    assert "couldn't resolve module" in o.phases[0].message


def test_dry_run_whose_phases_never_ran_is_not_a_pass(tmp_path: Path) -> None:
    runner = FakeRunner({"recreate-stack": Step(dies_before=True)})
    o = run(tmp_path, runner, dry_run=True)
    assert o.verdict != drill.Verdict.PASS
    status = {p.name: str(p.status) for p in o.phases}
    # The run died after inject-fault's tasks: that phase did not complete (error); the
    # ones after it were not reached.
    assert status["preflight"] == "checked" and status["inject-fault"] == "error"
    assert status["recreate-stack"] == status["promote-data"] == "skipped"


def test_dry_run_with_every_phase_checked_passes(tmp_path: Path) -> None:
    o = run(tmp_path, FakeRunner(), dry_run=True)
    assert o.verdict == drill.Verdict.PASS, o.reasons


def test_phase_dying_mid_drill_aborts_and_rolls_back(tmp_path: Path) -> None:
    runner = FakeRunner({"promote-data": Step(dies_before=True)})
    o = run(tmp_path, runner)
    assert o.verdict == drill.Verdict.ABORTED and o.exit_code == 3
    assert runner.runs[-1] == ["rollback"]
    assert [p.name for p in o.phases if str(p.status) == "ok"][-1] == "rollback"


def test_failed_preflight_fails_without_rollback(tmp_path: Path) -> None:
    runner = FakeRunner({"preflight": Step(tasks=(("Check replication", "failed", "assert"),))})
    o = run(tmp_path, runner)
    assert o.verdict == drill.Verdict.FAIL
    assert any(r.startswith("preflight failed:") for r in o.reasons)
    assert len(runner.runs) == 1


class Broken(drill.DrillListener):
    """A progress writer whose terminal went away."""

    def __init__(self) -> None:
        self.calls = 0

    def phase_started(self, name: str, at: Any) -> None:
        self.calls += 1
        if name == "promote-data":
            raise OSError(5, "Input/output error")


def test_a_failing_listener_is_reported_and_switched_off(tmp_path: Path) -> None:
    """Case 8: the drill goes on to its end; the broken listener is named and not called
    again."""
    listener = Broken()
    runner = FakeRunner({"smoke": Step(stats={"drkit_smoke": green_smoke()})})
    o = drill.run_drill(plan_in(tmp_path), "region-failover", "staging",
                        options=drill.DrillOptions(evidence=False), listener=listener,
                        runner=runner)
    assert o.verdict != drill.Verdict.ABORTED, o.reasons
    assert [str(p.status) for p in o.phases if p.name == "failback"] == ["ok"]
    assert listener.calls == 4  # preflight .. promote-data, then switched off
    assert any("switched off" in w and "Input/output error" in w for w in o.warnings)
    assert o.to_json()["warnings"] == list(o.warnings)


def test_cancel_mid_drill_aborts_and_rolls_back(tmp_path: Path) -> None:
    """What SIGHUP/SIGTERM do (the CLI cancels the token): aborted, exit 3, rollback ran."""
    cancel = drill.CancelToken()
    runner = FakeRunner({"promote-data": Step(on_start=lambda: cancel.cancel("SIGHUP"))})
    o = drill.run_drill(plan_in(tmp_path), "region-failover", "staging",
                        options=drill.DrillOptions(evidence=False), cancel=cancel,
                        runner=runner)
    assert o.verdict == drill.Verdict.ABORTED and o.exit_code == 3
    assert any("SIGHUP" in r for r in o.reasons)
    assert runner.runs[-1] == ["rollback"]


@pytest.mark.parametrize("failed_flow", ["balance"])
def test_a_red_flow_fails_with_rto_missed(tmp_path: Path, failed_flow: str) -> None:
    def red(runner: FakeRunner) -> dict[str, Any]:
        return {"entry": "https://e", "green": False, "green_at": None,
                "results": [{"flow": "authorize", "status": "pass", "detail": "ok"},
                            {"flow": failed_flow, "status": "fail", "detail": "500"}]}

    o = run(tmp_path, FakeRunner({"smoke": Step(stats={"drkit_smoke": red})}))
    assert o.verdict == drill.Verdict.FAIL
    assert f"smoke flows failed: {failed_flow}" in o.reasons
    assert any("did not recover" in r for r in o.reasons) and o.rto_s is None


def test_the_clock_stop_is_announced_once_before_failback_starts(tmp_path: Path) -> None:
    """Live progress: where the recovery clock stopped is told as soon as the recovery run
    observed it (failback is off the clock), once, with the RTO the record keeps."""
    events: list[tuple[str, Any]] = []

    class Heard(drill.DrillListener):
        def phase_started(self, name: str, at: Any) -> None:
            events.append(("phase", name))

        def clock_stopped(self, at: Any, rto_s: float) -> None:
            events.append(("stopped", rto_s))

    runner = FakeRunner({"smoke": Step(stats={"drkit_smoke": green_smoke(after_s=0.2)})})
    o = drill.run_drill(plan_in(tmp_path), "region-failover", "staging",
                        options=drill.DrillOptions(evidence=False), runner=runner,
                        listener=Heard())
    stops = [e for e in events if e[0] == "stopped"]
    assert stops == [("stopped", o.rto_s)] and o.rto_s is not None
    assert events.index(stops[0]) < events.index(("phase", "failback"))


def test_recover_runs_the_rollback_through_the_runner_passed_in(tmp_path: Path) -> None:
    """`drill recover` takes the runner too (the seam is the same for every playbook a drill
    command runs): its recovery playbook ran through the fake, and with no entry point to
    observe serving, the recovery is not called serving (exit 3)."""
    runner = FakeRunner()
    r = drill.recover(plan_in(tmp_path, entry_url=None), "staging", runner=runner)
    assert runner.runs == [["recover"]]
    assert [(p.name, str(p.status)) for p in r.phases] == [("recover", "ok")]
    assert not r.serving and r.exit_code == 3
