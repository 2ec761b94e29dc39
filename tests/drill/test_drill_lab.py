"""The region-failover drill on the real lab: moto, PostgreSQL, HAProxy, ansible-runner.

Each test runs the installed `drkit` command (as a scheduler or an on-call engineer would) with a
plan of its own: a copy of drkit.yml in a temporary directory, whose playbooks, inventories and
ansible.cfg are the repository's (symlinked), with its own evidence store and signing key.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.drills import DRKIT, drill, make_plan, serving

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.lab


def lab_state(lab: Any) -> dict[str, Any]:
    """What a drill changes: roles of the databases, where traffic goes, the processes."""
    with lab.pg("primary") as p, lab.pg("secondary") as s:
        state = {
            "primary_in_recovery": p.execute("select pg_is_in_recovery()").fetchone()[0],
            "secondary_in_recovery": s.execute("select pg_is_in_recovery()").fetchone()[0],
            "payments": p.execute("select count(*) from payments").fetchone()[0],
            "ledger": p.execute("select count(*) from ledger_entries").fetchone()[0],
        }
    st = lab.status()
    state["active_region"] = st.active_region
    state["pids"] = sorted(st.pids)
    return state


def test_full_drill_passes_twice_back_to_back(lab: Any, tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    for _ in range(2):
        rc, out, err = drill(plan)
        assert rc == 0, (out["reasons"], err[-3000:])
        assert out["verdict"] == "pass"
        assert [p["name"] for p in out["phases"]] == [
            "preflight", "inject-fault", "recreate-stack", "promote-data", "failover-traffic",
            "smoke", "failback"]
        assert all(p["status"] == "ok" for p in out["phases"])
        assert 0 < out["rto"]["actual_s"] <= out["rto"]["target_s"]
        # issue 19: the clock starts when the fault step issued the fault (its own time,
        # within the fault phase), checked against the canary's first failed request.
        fault = next(p for p in out["phases"] if p["name"] == "inject-fault")
        source = out["rto"]["clock_started_source"]
        by_step = source.startswith("phase inject-fault's fault step: issued at")
        # (or, when the canary failed before that time on a loaded machine, the phase start)
        assert by_step or "came before the fault step's time" in source, out["rto"]

        def at(s: str) -> datetime:
            return datetime.fromisoformat(s.replace("Z", "+00:00"))

        assert at(fault["started_at"]) <= at(out["rto"]["clock_started_at"])
        first_failure = out["rto"]["canary_first_failure_at"]
        assert not by_step or first_failure is None or at(first_failure) >= at(
            out["rto"]["clock_started_at"])
        assert "first round in which every flow passed" in out["rto"]["clock_stopped_source"]
        # Synchronous replication: no acknowledged payment may be lost.
        assert out["rpo"] == {"target_s": 0.0, "actual_s": 0.0, "met": True,
                              "lost_payments": 0}
        # What the verdict rests on, observed: the flows through the entry point, the canary.
        assert any(o.startswith("6 flows observed green through https://127.0.0.1:")
                   for o in out["observed"]), out["observed"]
        assert out["missing"] == [] and out["warnings"] == []
        for phase in ("inject-fault", "promote-data", "failover-traffic", "smoke"):
            assert next(p for p in out["phases"] if p["name"] == phase)["postconditions"]
        rec = out["reconciliation"]
        assert rec["acked_count"] > 0 and rec["acked_count"] == rec["present_count"]
        assert rec["acked_digest"] == rec["present_digest"] and rec["ledger"]["balanced"]
        assert {s["flow"] for s in out["smoke"]} == {
            "authorize", "capture", "refund", "balance", "idempotent-replay", "ledger-verify"}
        assert out["evidence"]["id"]
        assert lab.status().active_region == lab.primary_region  # failback returned traffic
        # Progress (stderr with --json) shows the clock running while it runs, then where it
        # stopped, and no clock on failback.
        lines = err.splitlines()
        assert any(ln.strip().startswith("smoke: started [clock ") for ln in lines), err[-3000:]
        stopped = next(i for i, ln in enumerate(lines) if "recovery clock stopped" in ln)
        failback = next(i for i, ln in enumerate(lines) if "failback: started" in ln)
        assert stopped < failback and "[clock" not in lines[failback], err[-3000:]
        assert f"{out['rto']['actual_s']:.2f}s after the fault" in lines[stopped]
    verify = subprocess.run([DRKIT, "evidence", "verify", "--plan", str(plan),
                             "--public-key", str(tmp_path / "keys" / "evidence.pub")],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # The record hashes the code the drill ran: playbooks, modules and action plugins.
    record = json.loads(sorted((tmp_path / "evidence" / "records").glob("*.json"))[-1]
                        .read_text())
    hashed = {f["path"] for f in record["files"]}
    collection = "collections/ansible_collections/drkit/dr/plugins"
    for used in ("playbooks/scenarios/region-failover/smoke.yml", f"{collection}/action/smoke.py",
                 f"{collection}/modules/pg.py", "inventories/lab/hosts.yml"):
        assert any(p.endswith(used) for p in hashed), (used, sorted(hashed))
    assert serving(lab)
    # A scenario's phase runs on its own with plain ansible-playbook and the vars file the run
    # wrote (as an Automation Controller job template would; docs/architecture.md), with the
    # environment's credentials in the environment (there: the job template's credential).
    from drkit import lab as drlab
    from drkit.config import load_plan

    vars_file = Path(out["artifacts_dir"]) / "vars.yml"
    assert vars_file.stat().st_mode & 0o077 == 0
    alone = subprocess.run(
        [str(Path(DRKIT).parent / "ansible-playbook"), "-i", str(REPO / "inventories/lab"),
         "-e", f"@{vars_file}", str(REPO / "playbooks/scenarios/region-failover/preflight.yml")],
        capture_output=True, text=True, cwd=REPO,
        env={**os.environ, **drlab.envvars(load_plan(plan))})
    assert alone.returncode == 0, alone.stdout[-3000:] + alone.stderr[-2000:]
    assert "failed=0" in alone.stdout and "Read replication from the primary database" in \
        alone.stdout, alone.stdout[-3000:]


def test_no_secret_of_the_lab_reaches_output_evidence_or_artifacts(lab: Any,
                                                                    tmp_path: Path) -> None:
    """The lab's real secrets (the payments database password, moto's secret key) appear in
    nothing a drill prints or writes: terminal output, evidence, run artifacts, reports."""
    from drkit.lab import LAB_AWS_SECRET_ACCESS_KEY

    password = (lab.state_dir / "secrets" / "payments.password").read_text().strip()
    token = lab.token  # the payments API's bearer token: smoke, canary and reconcile send it
    secrets = [s for s in (password, token, LAB_AWS_SECRET_ACCESS_KEY) if s]
    assert len(password) >= 16
    plan = make_plan(tmp_path)
    proc = subprocess.run([DRKIT, "drill", "run", "region-failover", "--env", "lab", "--plan",
                           str(plan)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    run_dir = Path(next(line.split(": ", 1)[1] for line in proc.stdout.splitlines()
                        if line.startswith("artifacts: ")))
    evidence_id = next(line.split(": ", 1)[1] for line in proc.stdout.splitlines()
                       if line.startswith("evidence: "))
    for fmt in ("html", "md", "json", "junit"):
        subprocess.run([DRKIT, "evidence", "export", evidence_id, "--format", fmt, "-o",
                        str(tmp_path / f"report.{fmt}"), "--plan", str(plan)], check=True,
                       capture_output=True)
    files = [p for root in (tmp_path, run_dir) for p in root.rglob("*")
             if p.is_file() and not p.is_symlink()]
    assert len(files) > 10
    texts = [proc.stdout, proc.stderr] + [p.read_bytes().decode(errors="replace") for p in files]
    leaks = [s for s in secrets for t in texts if s in t]
    assert leaks == []
    # The search itself works: the password is in the lab's own secret file.
    assert password in (lab.state_dir / "secrets" / "payments.password").read_text()


def test_rto_target_below_what_is_achievable_fails_and_says_so(lab: Any, tmp_path: Path) -> None:
    def tight(d: dict[str, Any]) -> None:
        d["services"]["payments"]["rto"] = "100ms"

    junit = tmp_path / "drill.xml"
    rc, out, _ = drill(make_plan(tmp_path, tight), "--smoke-timeout", "30s", "--junit-xml",
                       str(junit))
    assert rc == 1 and out["verdict"] == "fail"
    assert any(r.startswith("RTO missed:") for r in out["reasons"]), out["reasons"]
    assert out["rto"]["actual_s"] > 0.1
    # A failed drill is red in CI (issue 11: it wrote failures="0").
    import xml.etree.ElementTree as ET

    root = ET.fromstring(junit.read_text())
    failed = [c.get("name") for c in root.iter("testcase") if c.find("failure") is not None]
    assert "RTO payments" in failed and "verdict" in failed
    assert root.get("failures") == str(len(failed))
    assert serving(lab)


def test_a_broken_smoke_flow_fails_the_drill_and_is_named(lab: Any, tmp_path: Path) -> None:
    # Break refunds for real, in the data layer: the trigger replicates to the standby, so the
    # recovered region refuses refunds too.
    ddl = ("CREATE FUNCTION drkit_test_no_refunds() RETURNS trigger LANGUAGE plpgsql AS $$ "
           "BEGIN RAISE EXCEPTION 'refunds are broken on purpose'; END $$; "
           "CREATE TRIGGER drkit_test_no_refunds BEFORE UPDATE ON payments FOR EACH ROW "
           "WHEN (NEW.status = 'refunded') EXECUTE FUNCTION drkit_test_no_refunds()")
    with lab.pg("primary") as conn:
        conn.execute(ddl)
    try:
        rc, out, _ = drill(make_plan(tmp_path), "--smoke-timeout", "6s")
    finally:
        for role in ("primary", "secondary"):
            with lab.pg(role) as conn:
                if not conn.execute("select pg_is_in_recovery()").fetchone()[0]:
                    conn.execute("DROP TRIGGER IF EXISTS drkit_test_no_refunds ON payments; "
                                 "DROP FUNCTION IF EXISTS drkit_test_no_refunds()")
    assert rc == 1 and out["verdict"] == "fail"
    assert "smoke flows failed: refund" in out["reasons"], out["reasons"]
    refund = next(s for s in out["smoke"] if s["flow"] == "refund")
    assert refund["status"] == "fail"
    assert any(f["check"] == "smoke:refund" for f in out["findings"])
    assert serving(lab)


def test_sigterm_mid_phase_rolls_back_and_leaves_the_lab_serving(lab: Any,
                                                                  tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    proc = subprocess.Popen(
        [DRKIT, "drill", "run", "region-failover", "--env", "lab", "--json", "--plan", str(plan)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # progress goes to stderr with --json
        seen.append(line)
        if "promote-data: started" in line:
            proc.send_signal(signal.SIGTERM)
            break
    stdout, rest = proc.communicate(timeout=300)
    out = json.loads(stdout)
    assert proc.returncode == 3, "".join(seen) + rest
    assert out["verdict"] == "aborted"
    assert any("SIGTERM" in r for r in out["reasons"]), out["reasons"]
    assert any(p["name"] == "rollback" and p["status"] == "ok" for p in out["phases"])
    assert out["evidence"]["id"]
    assert serving(lab)
    assert lab.status().active_region == lab.primary_region


def test_dry_run_changes_nothing(lab: Any, tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    before = lab_state(lab)
    rc, out, err = drill(plan, "--dry-run")
    after = lab_state(lab)
    assert rc == 0, (out["reasons"], err[-2000:])
    assert out["verdict"] == "pass" and out["dry_run"] is True
    assert {p["status"] for p in out["phases"]} <= {"checked", "skipped"}
    # Check mode still says what each phase would change.
    assert any(p["changed"] for p in out["phases"] if p["name"] == "inject-fault")
    assert before == after
    assert not (tmp_path / "evidence" / "records").exists() or not any(
        (tmp_path / "evidence" / "records").iterdir())


def test_drill_check_is_the_readiness_check(lab: Any, tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    proc = subprocess.run([DRKIT, "drill", "check", "--env", "lab", "--json", "--plan", str(plan)],
                          capture_output=True, text=True, timeout=300)
    out = json.loads(proc.stdout)
    assert proc.returncode == 0, out["reasons"]
    assert [p["name"] for p in out["phases"]] == ["preflight"]
    streams = out["preflight"]["replication"]
    assert streams and streams[0]["state"] == "streaming"
    # Readiness fails when the standby is gone: replication no longer streams.
    with lab.pg("secondary") as conn:
        pid = conn.execute("select pid from pg_stat_wal_receiver").fetchone()
    assert pid is not None
    os.kill(int(pid[0]), signal.SIGSTOP)  # freeze the WAL receiver: replication stalls
    try:
        with lab.pg("primary") as conn:
            conn.execute("select pg_terminate_backend(pid) from pg_stat_replication")
        proc = subprocess.run([DRKIT, "drill", "check", "--env", "lab", "--json", "--plan",
                               str(plan)], capture_output=True, text=True, timeout=300)
    finally:
        os.kill(int(pid[0]), signal.SIGCONT)
    out = json.loads(proc.stdout)
    assert proc.returncode == 1 and out["verdict"] == "fail"
    assert any("replication is not ready" in r for r in out["reasons"]), out["reasons"]


def test_protected_environment_needs_confirmation(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    proc = subprocess.run([DRKIT, "drill", "run", "region-failover", "--env", "production",
                           "--plan", str(plan)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "protected: add --confirm production" in proc.stderr
    assert "Traceback" not in proc.stderr
