"""Drills that are killed, recovered, resumed and gated, on the real lab."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pexpect
import pytest

from tests.drills import DRKIT, drill, make_plan, serving

pytestmark = pytest.mark.lab


def _start(plan: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [DRKIT, "drill", "run", "region-failover", "--env", "lab", "--json", "--plan", str(plan),
         *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})})


def _kill_at(proc: subprocess.Popen[str], marker: str) -> str:
    """SIGKILL drkit as soon as its progress shows `marker`; return the run id."""
    assert proc.stderr is not None
    run_id, seen = "", []
    for line in proc.stderr:
        seen.append(line)
        m = re.match(r"drill (\S+): ", line)
        if m:
            run_id = m.group(1)
        if marker in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    time.sleep(1)  # ansible-playbook loses its terminal with drkit and exits
    return run_id


def _no_playbook_left(run_id: str) -> bool:
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "ansible-playbook" in cmd and run_id in cmd:
            return False
    return True


def test_killed_drill_is_recovered_and_recorded_as_interrupted(lab: Any,
                                                               tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    run_id = _kill_at(_start(plan), "failover-traffic: started")
    assert _no_playbook_left(run_id)
    rec = subprocess.run([DRKIT, "drill", "recover", "--env", "lab", "--json", "--plan",
                          str(plan)], capture_output=True, text=True, timeout=600)
    out = json.loads(rec.stdout)
    assert rec.returncode == 0, (out, rec.stderr[-2000:])
    assert out["serving"] and out["replication"] == "streaming"
    assert out["active_region"] == lab.primary_region
    assert len(out["sealed_interrupted"]) == 1
    verify = subprocess.run([DRKIT, "evidence", "verify", "--plan", str(plan), "--public-key",
                             str(tmp_path / "keys" / "evidence.pub"), "--json"],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout
    shown = subprocess.run([DRKIT, "evidence", "show", out["sealed_interrupted"][0], "--json",
                            "--plan", str(plan)], capture_output=True, text=True)
    assert json.loads(shown.stdout)["verdict"] == "interrupted"
    assert serving(lab)


def test_killed_drill_resumes_with_the_clock_of_the_original_fault(lab: Any,
                                                                   tmp_path: Path) -> None:
    def patient(d: dict[str, Any]) -> None:
        d["services"]["payments"]["rto"] = "10m"  # the pause between kill and resume counts

    plan = make_plan(tmp_path, patient)
    run_id = _kill_at(_start(plan), "promote-data: started")
    progress = json.loads(next((lab.state_dir / "runs").glob(f"{run_id}*/progress.json"))
                          .read_text())
    fault = datetime.fromisoformat(progress["clock_started_at"])
    time.sleep(2)
    resumed_at = datetime.now(fault.tzinfo)
    proc = subprocess.run([DRKIT, "drill", "resume", run_id, "--json", "--plan", str(plan)],
                          capture_output=True, text=True, timeout=900)
    out = json.loads(proc.stdout)
    # The first run's canary died with it, so a resumed drill cannot measure data loss: with an
    # RPO target in the plan its verdict is inconclusive (exit 1) and says so; it was a PASS
    # with no RPO measured (issue 11). Everything else it observed holds.
    assert proc.returncode == 1, (out["reasons"], proc.stderr[-3000:])
    assert out["verdict"] == "inconclusive"
    assert [m for m in out["missing"] if not m.startswith("RPO not measured")] == [], out
    assert any("flows observed green through" in o for o in out["observed"])
    assert out["resumed_from"]["run_id"] == run_id
    names = [p["name"] for p in out["phases"]]
    assert names[:3] == ["preflight", "inject-fault", "recreate-stack"]  # carried over
    assert "holds" in names and names.index("holds") < names.index("promote-data")
    # The clock counts from the original fault, so it includes the pause before resuming.
    assert out["rto"]["clock_started_at"].startswith(fault.isoformat()[:19])
    assert out["rto"]["actual_s"] > (resumed_at - fault).total_seconds()
    assert serving(lab)


def test_gate_refused_unattended_rolls_back(lab: Any, tmp_path: Path) -> None:
    def gated(d: dict[str, Any]) -> None:
        for ph in d["scenarios"]["region-failover"]["phases"]:
            if ph["name"] == "failover-traffic":
                ph["gate"] = True

    rc, out, _ = drill(make_plan(tmp_path, gated))
    assert rc == 3 and out["verdict"] == "aborted"
    assert out["gates"][0]["phase"] == "failover-traffic"
    assert out["gates"][0]["approved"] is False
    assert "--approve-gates" in out["gates"][0]["how"]
    assert any(p["name"] == "rollback" and p["status"] == "ok" for p in out["phases"])
    assert serving(lab)


# --no-failback leaves the lab failed over: run it after the session's other lab tests.
@pytest.mark.lab_last
def test_gate_confirmed_on_a_terminal(lab: Any, tmp_path: Path) -> None:
    def gated(d: dict[str, Any]) -> None:
        for ph in d["scenarios"]["region-failover"]["phases"]:
            if ph["name"] == "failover-traffic":
                ph["gate"] = True

    plan = make_plan(tmp_path, gated)
    child = pexpect.spawn(DRKIT, ["drill", "run", "region-failover", "--env", "lab", "--plan",
                                  str(plan), "--no-failback"], encoding="utf-8", timeout=600,
                          dimensions=(50, 200))
    child.expect("gate before failover-traffic")
    child.expect("continue\\?")
    child.sendline("yes")
    child.expect(r"verdict: (\w+)")
    verdict = child.match.group(1)
    child.expect(r"artifacts: (\S+)")
    run_dir = Path(child.match.group(1))
    child.expect(pexpect.EOF)
    child.close()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert verdict == "PASS", summary["reasons"]
    assert child.exitstatus == 0
    assert summary["gates"][0]["approved"] is True and summary["gates"][0]["how"] == "terminal"
    # --no-failback left traffic on the secondary region; the lab fixture repairs it next.
    assert lab.status().active_region == lab.secondary_region
    # DNS followed (in the lab, once the flows were green: the haproxy adapter's smoke step).
    assert lab.route53_failover() == {"PRIMARY": f"{lab.secondary_region}.{lab.hostname}",
                                      "SECONDARY": f"{lab.primary_region}.{lab.hostname}"}


def test_four_eyes_request_runs_once_and_gates_pass_unattended(lab: Any,
                                                               tmp_path: Path) -> None:
    def governed(d: dict[str, Any]) -> None:
        d["scenarios"]["region-failover"]["requires_approval"] = True
        for ph in d["scenarios"]["region-failover"]["phases"]:
            if ph["name"] == "failover-traffic":
                ph["gate"] = True

    plan = make_plan(tmp_path, governed)

    def cli(*args: str, who: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([DRKIT, "drill", *args, "--plan", str(plan)], capture_output=True,
                              text=True, timeout=900, env={**os.environ, "DRKIT_OPERATOR": who})

    # Without a request the run is refused before anything happens.
    refused = cli("run", "region-failover", "--env", "lab", who="alice")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    req = json.loads(cli("request", "region-failover", "--env", "lab", "--reason", "Q4 test",
                         "--json", who="alice").stdout)
    own = cli("approve", req["id"], who="alice")
    assert own.returncode == 2 and "cannot approve their own request" in own.stderr
    assert cli("approve", req["id"], who="bob").returncode == 0
    run = cli("run", "region-failover", "--env", "lab", "--request", req["id"],
              "--approve-gates", "--json", who="alice")
    out = json.loads(run.stdout)
    assert run.returncode == 0, (out["reasons"], run.stderr[-2000:])
    assert out["gates"][0]["approved"] and out["gates"][0]["how"] == "--approve-gates"
    again = cli("run", "region-failover", "--env", "lab", "--request", req["id"], who="alice")
    assert again.returncode == 2 and "already used" in again.stderr
    shown = json.loads(subprocess.run(
        [DRKIT, "evidence", "show", out["evidence"]["id"], "--json", "--plan", str(plan)],
        capture_output=True, text=True).stdout)
    assert shown["approved_by"] == "bob"
