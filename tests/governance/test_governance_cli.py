"""`drkit drill request|approve|requests` and `drkit findings ...` through Typer's CliRunner."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import typer
from typer.testing import CliRunner

from drkit.cli import app as drkit
from drkit.cli.approvals import app as approvals_app
from drkit.drill import DrillOutcome, Finding, Targets, Verdict
from drkit.governance import findings

runner = CliRunner()


def as_(operator: str, app: typer.Typer, *args: str):
    return runner.invoke(app, list(args), env={"DRKIT_OPERATOR": operator})


def test_request_approve_and_list(plan):
    p = str(plan.path)
    r = as_("alice", approvals_app, "request", "region-failover", "--env", "prod",
            "--reason", "Q2 DR test CHG-42", "--plan", p, "--json")
    assert r.exit_code == 0, r.output
    rid = json.loads(r.stdout)["id"]
    assert json.loads(r.stdout)["requested_by"] == "alice"

    r = as_("alice", approvals_app, "approve", rid, "--plan", p)
    assert r.exit_code == 2
    assert r.stderr.strip() == (f"drkit: request {rid}: the requester cannot approve their own "
                                "request (requested by alice; another operator must approve)")

    r = as_("bob", approvals_app, "approve", rid, "--expires", "soon", "--plan", p)
    assert r.exit_code == 2 and "--expires: 'soon' is not a duration" in r.stderr

    r = as_("bob", approvals_app, "approve", rid, "--expires", "24h", "--plan", p)
    assert r.exit_code == 0, r.output
    assert f"request {rid} approved by bob until " in r.stdout
    assert f"drkit drill run region-failover --env prod --request {rid}" in r.stdout

    r = as_("carol", approvals_app, "approve", rid, "--plan", p)
    assert r.exit_code == 2 and "is already approved (by bob" in r.stderr

    r = as_("carol", approvals_app, "requests", "--plan", p, "--json")
    assert r.exit_code == 0
    [req] = json.loads(r.stdout)["requests"]
    assert (req["id"], req["status"], req["approved_by"]) == (rid, "approved", "bob")
    r = as_("carol", approvals_app, "requests", "--plan", p)
    assert r.exit_code == 0 and f"{rid}  approved  region-failover in prod" in r.stdout

    r = as_("carol", approvals_app, "approve", "req-20990101T000000Z-000000", "--plan", p)
    assert r.exit_code == 2 and "unknown request" in r.stderr
    r = as_("carol", approvals_app, "request", "region-failover", "--env", "nowhere",
            "--reason", "x", "--plan", p)
    assert r.exit_code == 2 and "unknown environment 'nowhere'" in r.stderr


def test_findings_commands(plan):
    p = str(plan.path)
    out = DrillOutcome(
        id="run-1", scenario="region-failover", environment="staging", verdict=Verdict.FAIL,
        started_at=datetime(2026, 4, 1, tzinfo=UTC),
        ended_at=datetime(2026, 4, 1, 0, 2, tzinfo=UTC),
        targets=Targets(30.0, 0.0), phases=(), rto_s=42.0,
        findings=(Finding("rto", "high", "RTO 42.00s exceeds the 30s target"),))
    findings.open_from_outcome(plan, out, "ev-1", operator="scheduler")

    r = as_("alice", drkit, "findings", "list", "--open", "--plan", p)
    assert r.exit_code == 0, r.output
    assert "F-1  open" in r.stdout and "owner payments-oncall" in r.stdout

    r = as_("alice", drkit, "findings", "assign", "F-1", "--owner", "dba-team", "--plan", p)
    assert r.exit_code == 0 and "F-1 assigned to dba-team by alice" in r.stdout
    r = as_("cro", drkit, "findings", "accept", "F-1", "--reason", "fix in Q3", "--plan", p)
    assert r.exit_code == 0 and "F-1 risk accepted by cro: fix in Q3" in r.stdout
    r = as_("cro", drkit, "findings", "accept", "F-1", "--reason", "again", "--plan", p)
    assert r.exit_code == 2 and r.stderr.startswith("drkit: finding F-1 is already accepted")

    r = as_("alice", drkit, "findings", "show", "F-1", "--plan", p, "--json")
    assert r.exit_code == 0
    data = json.loads(r.stdout)
    assert data["status"] == "accepted" and data["owner"] == "dba-team"
    assert [(h["action"], h["by"]) for h in data["history"]] == [
        ("opened", "scheduler"), ("assigned", "alice"), ("accepted", "cro")]
    r = as_("alice", drkit, "findings", "show", "F-1", "--plan", p)
    assert r.exit_code == 0 and "risk accepted: by cro" in r.stdout and "history:" in r.stdout

    r = as_("alice", drkit, "findings", "list", "--plan", p, "--json")
    assert [f["id"] for f in json.loads(r.stdout)["findings"]] == ["F-1"]
    r = as_("alice", drkit, "findings", "show", "F-7", "--plan", p)
    assert r.exit_code == 2 and "unknown finding F-7" in r.stderr
    r = as_("alice", drkit, "findings", "assign", "F-1", "--plan", p)
    assert r.exit_code == 2  # --owner is required: a usage error


def test_a_bad_plan_is_exit_2(tmp_path):
    (tmp_path / "drkit.yml").write_text("version: 1\nregions: nope\n")
    r = as_("alice", drkit, "findings", "list", "--plan", str(tmp_path / "drkit.yml"))
    assert r.exit_code == 2 and "Traceback" not in r.output
