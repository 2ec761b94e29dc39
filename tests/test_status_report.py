"""Status (who is overdue) over chosen dates, and the audit report; then both over a real
evidence store through the CLI."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from drkit.cli import app
from drkit.config import Plan, load_plan
from drkit.errors import BadInput
from drkit.evidence import Recorder, generate_keypair, open_store
from drkit.report import build, parse_when, render_html
from drkit.status import DrillSummary, ServiceResult, State, compute, summary_from_outcome

PLAN = """\
version: 1
name: status-test
regions: {primary: eu-west-1, secondary: eu-central-1}
environments:
  lab: {inventory: inventory.ini, lab: true}
  production: {inventory: inventory.ini, protected: true}
services:
  payments: {tier: 1, owner: payments-oncall, rto: 30s, rpo: 0s}
  ledger: {tier: 2, rto: 2m, rpo: 5s}
  fraud: {tier: 1, rto: 1m, rpo: 10s}
  archive: {tier: 4, rto: 1d, rpo: 1h}
scenarios:
  region-failover:
    services: [payments, ledger]
    phases:
      - {name: preflight, playbook: pb.yml}
  fraud-failover:
    services: [fraud]
    phases:
      - {name: preflight, playbook: pb.yml}
evidence:
  store: ./evidence
  signing_key: keys/evidence.key
policy:
  drill_every: {1: 90d, 2: 180d}
"""

NOW = datetime(2025, 6, 30, 12, 0, tzinfo=UTC)


@pytest.fixture
def plan(tmp_path: Path) -> Plan:
    (tmp_path / "pb.yml").write_text("- hosts: all\n  tasks: []\n")
    (tmp_path / "inventory.ini").write_text("localhost\n")
    (tmp_path / "drkit.yml").write_text(PLAN)
    return load_plan(tmp_path / "drkit.yml")


def drill(id_: str, days_ago: float, verdict: str = "pass", *, env: str = "lab",
          scenario: str = "region-failover", services: tuple[str, ...] = ("payments", "ledger"),
          rto: float | None = 12.0, rpo: float | None = 0.0,
          findings: tuple[str, ...] = ()) -> DrillSummary:
    start = NOW - timedelta(days=days_ago)
    return DrillSummary(
        id=id_, scenario=scenario, environment=env, verdict=verdict, started_at=start,
        ended_at=start + timedelta(minutes=5),
        results=tuple(ServiceResult(s, 30.0, rto, 0.0, rpo, 0 if rpo is not None else None)
                      for s in services),
        findings=findings)


def by_name(report) -> dict:  # noqa: ANN001
    return {s.service: s for s in report.services}


# --------------------------------------------------------------------------- status logic


def test_never_drilled_recent_pass_stale_pass_and_no_policy(plan: Plan) -> None:
    drills = [drill("old", 200), drill("recent", 10, services=("payments",)),
              drill("fraud-old", 91, scenario="fraud-failover", services=("fraud",))]
    st = by_name(compute(plan.model, drills, now=NOW))
    pay, led, fraud, arch = st["payments"], st["ledger"], st["fraud"], st["archive"]

    assert pay.state == State.OK and pay.compliant and pay.last.id == "recent"
    assert pay.next_due == NOW - timedelta(days=10) + timedelta(minutes=5, days=90)
    # ledger's last passing drill is 200 days old; tier 2 allows 180.
    assert led.state == State.OVERDUE and led.overdue and led.last.id == "old"
    assert led.reason.startswith("a passing drill was due by 2025-")
    assert fraud.state == State.OVERDUE  # 91 days > 90
    assert arch.state == State.NO_POLICY and arch.compliant and arch.last is None


def test_never_drilled_is_overdue(plan: Plan) -> None:
    report = compute(plan.model, [], now=NOW)
    st = by_name(report)
    assert st["payments"].state == State.NEVER and st["payments"].overdue
    assert st["payments"].next_due is None
    assert st["payments"].reason == "no passing drill on record"
    assert not report.ok and report.exit_code == 1


def test_last_drill_failed_wins_over_a_recent_pass(plan: Plan) -> None:
    drills = [drill("good", 20), drill("bad", 2, "fail", rto=45.0)]
    pay = by_name(compute(plan.model, drills, now=NOW))["payments"]
    assert pay.state == State.FAILED and pay.last_failed and not pay.overdue
    assert pay.last_pass.id == "good" and pay.last.id == "bad"
    assert pay.reason == "the last drill (bad) did not pass: fail"
    j = pay.to_json()
    assert j["rto"] == {"target_s": 30.0, "actual_s": 45.0}
    assert j["last_drill"]["id"] == "bad" and j["compliant"] is False


def test_aborted_counts_as_not_passed_and_the_boundary_is_inclusive(plan: Plan) -> None:
    st = by_name(compute(plan.model, [drill("a", 1, "aborted")], now=NOW))
    assert st["payments"].state == State.FAILED
    # Due exactly now is not yet overdue.
    d = drill("edge", 90)
    edge_now = d.at + timedelta(days=90)
    assert not by_name(compute(plan.model, [d], now=edge_now))["payments"].overdue
    assert by_name(compute(plan.model, [d], now=edge_now + timedelta(seconds=1))
                   )["payments"].overdue


def test_environment_filter_and_drills_after_now(plan: Plan) -> None:
    drills = [drill("lab-pass", 5), drill("future", -3, "fail")]
    everywhere = by_name(compute(plan.model, drills, now=NOW))
    assert everywhere["payments"].state == State.OK  # the future failure is not seen yet
    prod = by_name(compute(plan.model, drills, now=NOW, environment="production"))
    assert prod["payments"].state == State.NEVER  # a lab drill proves nothing for production


def test_all_covered_and_passing_is_compliant(plan: Plan) -> None:
    drills = [drill("rf", 3), drill("ff", 4, scenario="fraud-failover", services=("fraud",))]
    report = compute(plan.model, drills, now=NOW)
    assert report.ok and report.exit_code == 0
    assert report.to_json()["ok"] is True


def test_summary_from_a_drill_outcome() -> None:
    s = summary_from_outcome({
        "id": "run", "scenario": "region-failover", "environment": "lab", "verdict": "fail",
        "started_at": "2025-06-01T02:00:00Z", "ended_at": "2025-06-01T02:05:00Z",
        "rto": {"target_s": 30, "actual_s": 41.5}, "rpo": {"target_s": 0, "actual_s": 0.5,
                                                           "lost_payments": 2},
        "findings": [{"check": "rto", "severity": "high", "message": "RTO 41.50s exceeds"}],
        "evidence": {"id": "ev-1"}}, ["payments"])
    assert (s.id, s.rto_s, s.rpo_s, s.lost_payments, s.services) == \
        ("ev-1", 41.5, 0.5, 2, ("payments",))
    assert s.findings == ("high rto: RTO 41.50s exceeds",)


# --------------------------------------------------------------------------- report


def test_report_content_chart_failures_and_escaping(plan: Plan) -> None:
    evil = "<script>alert('x')</script>"
    drills = [
        drill("ev-jan", 160, rto=20.0),
        drill("ev-apr", 80, "fail", rto=45.0, findings=("high rto:payments: 45s > 30s",)),
        drill("ev-may", 40, rto=14.0),
        drill("ev-evil", 30, "fail", scenario=evil, services=("fraud",), rto=None, rpo=None,
              findings=(f"high phase:{evil}: failed",)),
        drill("ev-jun", 5, rto=10.0),
    ]
    since, until = parse_when("2025-04-01", now=NOW), parse_when("2025-06-30", now=NOW, end=True)
    rep = build(plan.model, drills, since=since, until=until, now=NOW)
    assert [d.id for d in rep.drills] == ["ev-apr", "ev-may", "ev-evil", "ev-jun"]
    assert rep.pass_rate == 0.5
    assert [d.id for d in rep.failures] == ["ev-apr", "ev-evil"]
    assert rep.trend.slope_s_per_30d is not None and rep.trend.slope_s_per_30d < 0
    # The January drill is outside the period but still counts for the overdue view.
    assert by_name(rep.status)["ledger"].last_pass.id == "ev-jun"

    html = render_html(rep)
    assert evil not in html and "<script" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert html.count("<svg") == 3  # RTO, RPO and the trend
    # One bar per drill in each bar chart, with its evidence id in the tooltip.
    rto_svg = html.split("<svg")[1]
    assert rto_svg.count("<rect") == 3 and rto_svg.count("&#215;</text>") == 1
    for failed in ("ev-apr", "ev-evil"):
        failures = html.split("<h2>Failures</h2>")[1].split("<h2>")[0]
        assert f"<code>{failed}</code>" in failures
    assert "high rto:payments: 45s &gt; 30s" in html
    overdue = html.split("<h2>Services overdue</h2>")[1].split("<h2>")[0]
    assert re.search(r"<td>fraud</td>.*?<td class=\"fail\">failed</td>", overdue, re.S)
    assert "50%" in html and "improving (faster)" in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")  # offline
    assert "default-src 'none'" in html


def test_report_dates() -> None:
    assert parse_when("90d", now=NOW) == NOW - timedelta(days=90)
    assert parse_when("2025-06-30", now=NOW, end=True) == datetime(2025, 7, 1, tzinfo=UTC)
    with pytest.raises(BadInput, match=r"'last quarter' is not a date \(use 2025-01-31"):
        parse_when("last quarter", now=NOW)


def test_report_period_must_be_ordered(plan: Plan) -> None:
    with pytest.raises(BadInput, match="is not before --until"):
        build(plan.model, [], since=NOW, until=NOW - timedelta(days=1), now=NOW)


# --------------------------------------------------------------------------- real store + CLI


def _seal(plan: Plan, name: str, verdict: str, rto: float) -> str:
    store = open_store(plan=plan)
    rec = Recorder.open(store, kind="drill", name=name, environment="lab", plan=plan)
    sealed = rec.seal(verdict, {"rto": {"target_s": 30, "measured_s": rto},
                                "rpo": {"target_s": 0, "measured_s": 0, "lost_payments": 0}})
    return sealed.id


def _run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_status_and_report_over_a_real_evidence_store(plan: Plan, tmp_path: Path) -> None:
    generate_keypair(plan.root / "keys" / "evidence.key")
    p = str(plan.path)

    code, out, _ = _run("status", "--json", "--plan", p)
    assert code == 1
    assert {s["service"]: s["state"] for s in json.loads(out)["services"]} == {
        "payments": "never-drilled", "ledger": "never-drilled", "fraud": "never-drilled",
        "archive": "no-policy"}

    rf = _seal(plan, "region-failover", "pass", 12.0)
    ff = _seal(plan, "fraud-failover", "pass", 20.0)
    code, out, err = _run("status", "--plan", p)
    assert code == 0, out + err
    assert re.search(rf"payments\s+1\s+ok\s+{rf} ", out)
    assert "4 of 4 services compliant" in out

    evil = "<script>alert(1)</script>"
    bad = _seal(plan, evil, "fail", 50.0)
    bad2 = _seal(plan, "fraud-failover", "fail", 75.0)
    code, out, err = _run("status", "--json", "--plan", p)
    data = json.loads(out)
    assert code == 1 and data["ok"] is False
    fraud = next(s for s in data["services"] if s["service"] == "fraud")
    assert fraud["state"] == "failed" and fraud["last_drill"]["id"] == bad2
    assert fraud["rto"] == {"target_s": 60.0, "actual_s": 75.0}
    code, _, err = _run("status", "--plan", p)
    assert code == 1 and f"fraud: failed: the last drill ({bad2}) did not pass: fail" in err

    out_file = tmp_path / "pack" / "report.html"
    code, out, err = _run("report", "--since", "1d", "-o", str(out_file), "--plan", p)
    assert code == 0, err
    assert out.strip() == f"wrote {out_file}: 4 drills, pass rate 50%, 2 not passed"
    html = out_file.read_text()
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    for rid in (rf, ff, bad, bad2):
        assert f"<code>{rid}</code>" in html
    failures = html.split("<h2>Failures</h2>")[1].split("<h2>")[0]
    assert f"<code>{bad}</code>" in failures and f"<code>{rf}</code>" not in failures
    assert "<svg" in html

    code, out, _ = _run("report", "--since", "1d", "--json", "--plan", p)
    assert code == 0 and json.loads(out)["pass_rate"] == 0.5

    code, _, err = _run("report", "--since", "yesterday", "--plan", p)
    assert code == 2 and err.startswith("drkit: 'yesterday' is not a date")
    code, _, err = _run("status", "--env", "staging", "--plan", p)
    assert code == 2 and "unknown environment 'staging'" in err


def test_an_inconclusive_drill_is_not_a_pass_for_status_or_metrics(plan: Plan) -> None:
    """Every green is earned (issue 11): a drill that observed too little to judge leaves the
    service failed in `drkit status`, and its metrics say no success and no RTO."""
    from drkit import metrics

    drills = [drill("good", 20), drill("unobserved", 1, "inconclusive", rto=None, rpo=None)]
    pay = by_name(compute(plan.model, drills, now=NOW))["payments"]
    assert pay.state == State.FAILED and pay.last_pass.id == "good"
    assert pay.reason == "the last drill (unobserved) did not pass: inconclusive"
    samples = metrics.samples_for({"scenario": "region-failover", "environment": "lab",
                               "verdict": "inconclusive", "ended_at": "2026-11-30T10:00:00Z",
                               "rto": {"target_s": 30, "actual_s": None},
                               "rpo": {"target_s": 0, "actual_s": None}}, plan=plan)
    got = {s.name: s.value for s in samples}
    assert got["drkit_drill_success"] == 0.0
    assert got["drkit_drill_rto_seconds"] != got["drkit_drill_rto_seconds"]  # NaN: not measured
