"""`drkit drill status` and `drkit drill attach` read the shared state (a real moto server);
a controller is refused before it starts anything on a node when a live lease holds the
environment (issue 18)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from drkit.state import state_from

from .conftest import STATE_REGION

DRKIT = str(Path(sys.executable).parent / "drkit")


def _plan(tmp_path: Path, state: str) -> Path:
    (tmp_path / "inv.ini").write_text("localhost ansible_connection=local\n")
    (tmp_path / "pb.yml").write_text("- name: x\n  hosts: all\n  tasks: []\n")
    (tmp_path / "drkit.yml").write_text(f"""\
version: 1
regions: {{primary: eu-west-1, secondary: eu-central-1}}
environments:
  prod:
    inventory: inv.ini
    state: {{s3: "{state}", region: {STATE_REGION}}}
    execution_nodes:
      eu-central-1: {{host: 192.0.2.1, ssh_options: [ConnectTimeout=1]}}
  stage: {{inventory: inv.ini}}
services:
  payments: {{tier: 1, rto: 5m, rpo: 0s}}
scenarios:
  region-failover:
    services: [payments]
    phases:
      - {{name: smoke, playbook: pb.yml, starts_clock: true, stops_clock: true}}
""")
    return tmp_path / "drkit.yml"


def drkit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DRKIT, *args], capture_output=True, text=True, timeout=120)


def test_status_and_attach_from_the_shared_state(state_bucket, tmp_path):
    plan = str(_plan(tmp_path, state_bucket))
    r = drkit("drill", "status", "-p", plan)
    assert r.returncode == 0 and r.stdout.strip() == "prod: no drill running", r.stderr
    state = state_from(state_bucket, region=STATE_REGION)
    lease = state.acquire("prod", "drill run region-failover", run_id="r-42", ttl=60)
    r = drkit("drill", "status", "-p", plan)
    assert r.returncode == 0 and r.stdout.startswith(
        "prod: running r-42: `drkit drill run region-failover` (run r-42)"), r.stdout
    r = drkit("drill", "status", "-p", plan, "--json")
    assert '"running": true' in r.stdout and '"token": 1' in r.stdout
    # A controller is refused before it touches the node (which does not exist: 192.0.2.1).
    r = drkit("drill", "run", "region-failover", "-e", "prod", "-p", plan)
    assert r.returncode == 2 and "another controller holds environment 'prod'" in r.stderr \
        and "(run r-42)" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    lease.append("phase", {"name": "smoke", "status": "ok"})
    lease.finish({"verdict": "pass", "exit_code": 0, "evidence_id": "ev-1", "reasons": []})
    lease.release()
    r = drkit("drill", "attach", "r-42", "-p", plan)
    assert r.returncode == 0, r.stderr
    assert "[1] phase smoke ok" in r.stdout and "verdict: pass (exit 0); evidence ev-1" in r.stdout
    r = drkit("drill", "status", "-p", plan)
    assert r.stdout.strip() == "prod: no drill running"


def test_unknown_runs_and_environments_without_state_are_one_line(state_bucket, tmp_path):
    plan = str(_plan(tmp_path, state_bucket))
    r = drkit("drill", "attach", "nope", "-p", plan)
    assert r.returncode == 2 and r.stderr.strip() == (
        "drkit: run 'nope' is in no environment's shared state (prod); `drkit drill status` "
        "lists the running drills"), r.stderr
    r = drkit("drill", "status", "-e", "stage", "-p", plan)
    assert r.returncode == 2 and "environment 'stage' has no shared state" in r.stderr
    assert "Traceback" not in r.stderr


def test_the_driver_command_is_detached_and_forwards_no_secret(tmp_path):
    from drkit.config import ExecutionNode
    from drkit.drill.shared import driver_command
    from drkit.remote import from_config

    node = from_config("eu-central-1", ExecutionNode(host="n1", python="/opt/d/bin/python",
                                                     state_dir="/var/tmp/x y"))
    cmd = driver_command(node, plan_path="/p/drkit.yml", scenario="region-failover",
                         env_name="prod", run_id="r1", args=["--no-failback"],
                         environ={"AWS_SECRET_ACCESS_KEY": "s3cr3t", "AWS_REGION": "eu-north-1",
                                  "AWS_SESSION_TOKEN": "tok"})
    assert "s3cr3t" not in cmd and "tok" not in cmd
    assert "env AWS_REGION=eu-north-1 setsid nohup /opt/d/bin/drkit drill run region-failover " \
           "--env prod --plan /p/drkit.yml --here --run-id r1 --no-failback" in cmd
    assert cmd.startswith("mkdir -p '/var/tmp/x y' && cd '/var/tmp/x y' && ")
    assert cmd.endswith(">'/var/tmp/x y/drill-r1.log' 2>&1 </dev/null &")
