"""The findings register from real drill outcomes: open, deduplicate, retest, assign, accept."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta

import pytest

from drkit.drill import DrillOutcome, Finding, PhaseResult, PhaseStatus, Targets, Verdict
from drkit.errors import BadInput
from drkit.flows import FlowResult, FlowStatus
from drkit.governance import findings
from drkit.governance.findings import Action, FindingStatus

T0 = datetime(2026, 4, 1, 10, 0, tzinfo=UTC)
PHASES = ("preflight", "inject-fault", "smoke", "failback")


def outcome(verdict: Verdict, *, env: str = "staging", rto: float | None = 12.0,
            failed: tuple[Finding, ...] = (), only: tuple[str, ...] = PHASES,
            dry_run: bool = False, at: datetime = T0) -> dict:
    """A drill outcome built with the drill's own types, as `drkit drill run` produces it."""
    phases = tuple(PhaseResult(name, PhaseStatus.OK, at, at + timedelta(seconds=3))
                   for name in only)
    smoke_ok = not any(f.check.startswith("smoke:") for f in failed)
    o = DrillOutcome(
        id=f"run-{at:%H%M}", scenario="region-failover", environment=env, verdict=verdict,
        started_at=at, ended_at=at + timedelta(minutes=2), targets=Targets(30.0, 0.0),
        phases=phases, dry_run=dry_run, rto_s=rto, rpo_s=0.0 if rto is not None else None,
        lost_payments=0,
        smoke=(FlowResult("authorize", FlowStatus.PASS if smoke_ok else FlowStatus.FAIL, 0.0,
                          ""),) if "smoke" in only else (),
        findings=failed)
    data = o.to_json()
    # the shape drkit.flows.Reconciliation.to_json writes (the ledger's check in its own object)
    data["reconciliation"] = {"ledger": {"balanced": True}} if rto is not None else None
    return data


RTO_MISS = Finding("rto", "high", "RTO 42.00s exceeds the 30s target")
SMOKE = Finding("smoke:authorize", "high", "smoke flow authorize did not pass")
FAILBACK = Finding("failback", "medium", "failback failed: standby did not attach")


def test_a_failing_drill_opens_findings_with_owner_and_due_date(plan):
    out = outcome(Verdict.FAIL, rto=42.0, failed=(RTO_MISS, FAILBACK))
    opened = findings.open_from_outcome(plan, out, "ev-1", operator="scheduler", now=T0)
    assert [(f.id, f.check, f.severity) for f in opened] == [
        ("F-1", "rto", "high"), ("F-2", "failback", "medium")]
    rto = opened[0]
    # payments is the scenario's tier-1 service: its owner owns scenario-wide checks.
    assert rto.owner == "payments-oncall" and rto.status == FindingStatus.OPEN
    assert rto.due_at == T0 + timedelta(days=7)               # policy.finding_due.high
    assert opened[1].due_at == T0 + timedelta(days=30)        # policy.finding_due.medium
    assert (rto.scenario, rto.environment, rto.evidence_id) == ("region-failover", "staging",
                                                                "ev-1")
    assert rto.opened_by == "scheduler" and rto.history[0].action == Action.OPENED
    assert not rto.overdue(T0 + timedelta(days=6)) and rto.overdue(T0 + timedelta(days=8))
    log = plan.root / "evidence" / "findings.jsonl"
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600
    assert findings.verify_register(plan) == []


def test_findings_are_deduplicated_while_open(plan):
    findings.open_from_outcome(plan, outcome(Verdict.FAIL, failed=(RTO_MISS,)), "ev-1", now=T0)
    again = findings.open_from_outcome(plan, outcome(Verdict.FAIL, failed=(RTO_MISS, SMOKE)),
                                       "ev-2", now=T0 + timedelta(days=1))
    assert [(f.id, f.check) for f in again] == [("F-2", "smoke:authorize"), ("F-1", "rto")]
    rto = findings.get(plan, "F-1")
    assert rto.occurrences == ("ev-1", "ev-2")
    assert [e.action for e in rto.history] == [Action.OPENED, Action.RECURRED]
    # The same run applied twice adds nothing.
    assert findings.open_from_outcome(plan, outcome(Verdict.FAIL, failed=(RTO_MISS,)), "ev-2") \
        == []
    # Another environment is another finding.
    prod = findings.open_from_outcome(plan, outcome(Verdict.FAIL, env="prod",
                                                    failed=(RTO_MISS,)), "ev-3")
    assert [f.id for f in prod] == ["F-3"]
    assert len(findings.list_findings(plan)) == 3


def test_a_passing_retest_closes_what_it_covers_in_the_same_environment_only(plan):
    findings.open_from_outcome(plan, outcome(Verdict.FAIL, rto=42.0, failed=(RTO_MISS, SMOKE)),
                               "ev-fail", now=T0)
    # A pass in another environment closes nothing here.
    other = findings.apply_outcome(plan, outcome(Verdict.PASS, env="lab"), "ev-lab")
    assert other.closed == () and other.opened == ()
    # A preflight-only pass in the same environment does not prove the RTO.
    pre = findings.close_on_retest(plan, outcome(Verdict.PASS, only=("preflight",), rto=None),
                                   "ev-pre")
    assert pre == []
    # A dry run proves nothing either way.
    assert findings.apply_outcome(plan, outcome(Verdict.PASS, dry_run=True), "ev-dry").closed \
        == ()
    retest = findings.apply_outcome(plan, outcome(Verdict.PASS, at=T0 + timedelta(days=3)),
                                    "ev-retest", operator="scheduler",
                                    now=T0 + timedelta(days=3))
    assert sorted(f.id for f in retest.closed) == ["F-1", "F-2"] and retest.opened == ()
    f1 = findings.get(plan, "f1")
    assert f1.status == FindingStatus.CLOSED and f1.closed_by_evidence == "ev-retest"
    assert f1.closed_at == T0 + timedelta(days=3) and f1.history[-1].by == "scheduler"
    assert findings.list_findings(plan, open_only=True) == []
    assert retest.to_evidence()["closed"][0]["status"] == "closed"
    # After closing, the same failure opens a NEW finding.
    reopened = findings.open_from_outcome(plan, outcome(Verdict.FAIL, failed=(RTO_MISS,)), "e4")
    assert [f.id for f in reopened] == ["F-3"]


def test_the_ledger_finding_closes_only_on_a_ledger_seen_balanced(plan):
    """The reconciliation as a drill writes it (flows.Reconciliation.to_json: the ledger's
    check in its own object); a ledger not read (balanced None) proves nothing."""
    ledger = Finding("ledger", "high", "the ledger did not balance after the drill")
    findings.open_from_outcome(plan, outcome(Verdict.FAIL, failed=(ledger,)), "ev-1", now=T0)
    unread = outcome(Verdict.PASS)
    unread["reconciliation"] = {"ledger": {"balanced": None, "entries": 0}}
    assert findings.close_on_retest(plan, unread, "ev-2") == []
    balanced = outcome(Verdict.PASS)
    balanced["reconciliation"] = {"ledger": {"balanced": True, "entries": 12}}
    assert [f.id for f in findings.close_on_retest(plan, balanced, "ev-3")] == ["F-1"]


def test_a_pass_that_still_reports_a_check_failed_does_not_close_it(plan):
    findings.open_from_outcome(plan, outcome(Verdict.FAIL, failed=(FAILBACK,)), "ev-1")
    # Failback phase left out (--no-failback): the failback finding is not retested.
    assert findings.close_on_retest(plan, outcome(Verdict.PASS, only=PHASES[:3]), "ev-2") == []
    assert findings.get(plan, "F-1").unresolved


def test_assign_and_accept_are_kept_in_the_history(plan):
    findings.open_from_outcome(plan, outcome(Verdict.FAIL, failed=(RTO_MISS,)), "ev-1", now=T0)
    f = findings.assign(plan, "F-1", "dba-team", operator="alice", now=T0 + timedelta(hours=1))
    assert f.owner == "dba-team"
    assert (f.history[-1].by, f.history[-1].note) == ("alice", "owner payments-oncall -> dba-team")
    with pytest.raises(BadInput, match="already owned by dba-team"):
        findings.assign(plan, "F-1", "dba-team", operator="alice")
    f = findings.accept(plan, "F-1", "vendor fix due in Q3; manual failover runbook covers it",
                        operator="cro", now=T0 + timedelta(hours=2))
    assert f.status == FindingStatus.ACCEPTED and f.unresolved
    assert (f.accepted_by, f.accepted_at) == ("cro", T0 + timedelta(hours=2))
    assert f.acceptance_reason.startswith("vendor fix")
    assert [e.action for e in f.history] == [Action.OPENED, Action.ASSIGNED, Action.ACCEPTED]
    with pytest.raises(BadInput, match=r"already accepted \(by cro at 2026-04-01T12:00:00Z\)"):
        findings.accept(plan, "F-1", "again", operator="cro")
    with pytest.raises(BadInput, match="--reason is required"):
        findings.accept(plan, "F-1", " ", operator="cro")
    # An accepted finding is still deduplicated, and a retest still closes it.
    assert [f.id for f in findings.open_from_outcome(
        plan, outcome(Verdict.FAIL, failed=(RTO_MISS,)), "ev-2")] == ["F-1"]
    findings.close_on_retest(plan, outcome(Verdict.PASS), "ev-3")
    with pytest.raises(BadInput, match=r"finding F-1 is closed \(retest ev-3 at "):
        findings.assign(plan, "F-1", "x", operator="alice")
    with pytest.raises(BadInput, match=r"unknown finding F-9 \(list them with"):
        findings.get(plan, "F-9")
    with pytest.raises(BadInput, match="invalid finding id"):
        findings.get(plan, "../x")


def test_a_failed_drill_without_named_checks_still_opens_one(plan):
    out = outcome(Verdict.FAIL)
    out["reasons"] = ["canary could not reach the entry point"]
    [f] = findings.open_from_outcome(plan, out, "ev-1")
    assert (f.check, f.severity, f.message) == ("verdict", "high",
                                                "canary could not reach the entry point")
    assert findings.close_on_retest(plan, outcome(Verdict.PASS), "ev-2")[0].id == f.id


def test_an_edited_register_is_detected(plan):
    findings.open_from_outcome(plan, outcome(Verdict.FAIL, failed=(RTO_MISS, SMOKE)), "ev-1")
    findings.accept(plan, "F-1", "ok", operator="cro")
    log = plan.root / "evidence" / "findings.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(lines[0] + lines[1].replace(b'"high"', b'"low"') + lines[2])
    assert findings.verify_register(plan) == [
        "findings.jsonl:3: does not follow line 2 (edited, removed or reordered)"]
    log.write_bytes(lines[0] + lines[2])
    assert findings.verify_register(plan)[0].startswith("findings.jsonl:2: does not follow")


def test_findings_and_their_retest_are_in_the_audit_report(plan):
    from drkit import report as rp

    findings.apply_outcome(plan, outcome(Verdict.FAIL, rto=42.0, failed=(RTO_MISS,)), "ev-fail",
                           operator="scheduler", now=T0)
    later = T0 + timedelta(days=1)

    def build(now: datetime) -> rp.Report:
        register = [f.to_json(now) for f in findings.list_findings(plan)]
        return rp.build(plan.model, [], since=T0 - timedelta(days=1), until=now + timedelta(1),
                        now=now, findings=register)

    html = rp.render_html(build(later))
    assert "ev-fail" in html and "RTO 42.00s exceeds the 30s target" in html
    assert ">open" in html
    findings.apply_outcome(plan, outcome(Verdict.PASS, at=later), "ev-retest",
                           operator="scheduler", now=later)
    rep = build(later + timedelta(hours=1))
    assert [f["status"] for f in rep.findings] == ["closed"]
    assert rep.to_json()["findings"][0]["closed_by_evidence"] == "ev-retest"
    assert "ev-retest" in rp.render_html(rep)
