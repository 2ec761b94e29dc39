"""RTO of `drkit drill run region-failover --env lab` against a floor with no orchestration.

The floor performs the same operations as the drill's recovery path, directly from Python:
kill the primary region's payments instances and crash its database, update the regional stack
in the secondary region (in the background, as the drill does), promote the standby, switch
HAProxy's map over its runtime socket, flip the Route53 records (awaited after the clock, as the
drill does in the lab), and run the smoke flows until all pass. Its clock runs from the first
kill to the first all-green round, the same span the drill measures.

Drills and floors alternate on one lab of their own (its own state directory and ports), each
floor followed by `drkit drill recover`, so both see the same machine load. Medians of N each.

    .venv/bin/python bench/bench_drill.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, VENV_BIN, machine, write_section  # noqa: E402

sys.path.insert(0, str(ROOT))
from tests.drills import make_plan  # noqa: E402  (the drill tests' plan: own store and key)

DRKIT = str(VENV_BIN / "drkit")
PG_BIN = "/usr/lib/postgresql/15/bin"


def _on_clock(drill: dict, name: str) -> float:
    """Seconds of phase `name` on the recovery clock: its duration, cut at the clock's stop."""
    ph = {p["name"]: p for p in drill["phases"]}
    started = datetime.fromisoformat(ph[name]["started_at"])
    stopped = (datetime.fromisoformat(ph["inject-fault"]["started_at"])
               + timedelta(seconds=drill["rto"]["actual_s"]))
    return max(0.0, min(ph[name]["duration_s"], (stopped - started).total_seconds()))


def drkit(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([DRKIT, *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise SystemExit(f"drkit {' '.join(args)} failed ({proc.returncode}):\n"
                         f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc


def floor(plan_path: Path) -> float:
    """The recovery path done directly; returns seconds from the first kill to all green."""
    import boto3

    from drkit import flows, lab
    from drkit.config import lab_config, load_plan

    plan = load_plan(plan_path)
    cfg = lab_config(plan)
    sd, ports = cfg.state_dir, cfg.ports
    primary, secondary = cfg.primary_region, cfg.secondary_region
    aws = {"endpoint_url": f"http://127.0.0.1:{ports['moto']}", **{
        k.lower(): v for k, v in lab.envvars(plan).items()
        if k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}}
    cfn = boto3.client("cloudformation", region_name=secondary, **aws)
    r53 = boto3.client("route53", region_name=primary, **aws)
    outputs = json.loads((sd / "aws" / "outputs.json").read_text())["route53"]
    stack = cfn.describe_stacks(StackName="drkit-payments")["Stacks"][0]
    params = [{"ParameterKey": p["ParameterKey"],
               "ParameterValue": "primary" if p["ParameterKey"] == "Role"
               else p["ParameterValue"]} for p in stack["Parameters"]]
    template = (ROOT / "playbooks" / "templates" / "regional-stack.yml").read_text()

    def as_postgres(*argv: str) -> None:
        subprocess.run(["runuser", "-u", cfg.os_user, "--", *argv], check=True,
                       capture_output=True)

    start = datetime.now(UTC)
    # inject-fault
    as_postgres(f"{PG_BIN}/pg_ctl", "stop", "-m", "immediate", "-D",
                str(sd / "pg" / primary / "data"))
    for pidfile in (sd / "services").glob(f"{primary}-*.pid"):
        try:
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    # recreate-stack, in the background
    stack_done = threading.Thread(target=lambda: cfn.update_stack(
        StackName="drkit-payments", TemplateBody=template, Parameters=params))
    stack_done.start()
    # promote-data
    as_postgres(f"{PG_BIN}/pg_ctl", "promote", "-w", "-D", str(sd / "pg" / secondary / "data"))
    stack_done.join()
    # failover-traffic: HAProxy now, Route53 in the background
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sd / "haproxy" / "admin.sock"))
        s.sendall(f"set map {sd}/haproxy/active.map active {secondary}\n".encode())
        s.recv(4096)
    (sd / "haproxy" / "active.map").write_text(f"active {secondary}\n")

    def flip() -> None:
        changes = []
        for ident, failover, region in (("primary", "PRIMARY", secondary),
                                        ("secondary", "SECONDARY", primary)):
            rr = {"Name": cfg.hostname, "Type": "CNAME", "TTL": 30, "SetIdentifier": ident,
                  "Failover": failover, "ResourceRecords": [{"Value": f"{region}.{cfg.hostname}"}]}
            if failover == "PRIMARY":
                rr["HealthCheckId"] = outputs["health_check_id"]
            changes.append({"Action": "UPSERT", "ResourceRecordSet": rr})
        r53.change_resource_record_sets(HostedZoneId=outputs["zone_id"],
                                        ChangeBatch={"Changes": changes})

    dns = threading.Thread(target=flip)
    dns.start()
    # smoke
    outcome = flows.smoke_until_green(f"https://127.0.0.1:{ports['https']}",
                                      str(sd / "ca" / "ca.crt"), list(flows.FLOWS), 60,
                                      token=(sd / "secrets" / "api.token").read_text().strip())
    dns.join()
    if outcome.green_at is None:
        raise SystemExit(f"floor: smoke never went green: {outcome.results}")
    return (outcome.green_at - start).total_seconds()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--port-base", type=int, default=23400)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="drkit-bench-drill-", dir="/tmp"))
    os.chmod(tmp, 0o755)
    os.environ.update({"DRKIT_LAB_DIR": str(tmp / "lab"),
                       "DRKIT_LAB_PORT_BASE": str(args.port_base)})
    (tmp / "plan").mkdir()
    plan = make_plan(tmp / "plan")
    os.environ["DRKIT_PLAN"] = str(plan)
    drkit("lab", "up")
    drills: list[dict] = []
    floors: list[float] = []
    try:
        for i in range(args.runs):
            out = json.loads(drkit("drill", "run", "region-failover", "--env", "lab",
                                   "--json", check=False).stdout)
            if out["verdict"] != "pass":
                raise SystemExit(f"drill {i + 1} did not pass: {out['reasons']}")
            drills.append(out)
            floors.append(floor(plan))
            drkit("drill", "recover", "--env", "lab")
            print(f"run {i + 1}: drill RTO {out['rto']['actual_s']:.2f}s, "
                  f"floor {floors[-1]:.2f}s", flush=True)
    finally:
        drkit("lab", "down", check=False)
    rtos = [d["rto"]["actual_s"] for d in drills]
    phases = ["inject-fault", "recreate-stack", "promote-data", "failover-traffic", "smoke"]
    per_phase = {ph: statistics.median(_on_clock(d, ph) for d in drills) for ph in phases}
    rto, flo = statistics.median(rtos), statistics.median(floors)
    load = os.getloadavg()[0]
    rows = "\n".join(f"| {ph} | {per_phase[ph]:.2f} s |" for ph in phases)
    d_runs, f_runs = (", ".join(f"{x:.2f}" for x in xs) for xs in (rtos, floors))
    body = f"""## Drill RTO against a floor (bench/bench_drill.py)

{machine()}; load average {load:.1f} when it finished; {args.runs} drills and {args.runs}
floors alternating on one lab (4 payments instances per region, synchronous replication).

| | median | runs |
|---|---|---|
| `drkit drill run` RTO | {rto:.2f} s | {d_runs} |
| floor (same operations, no orchestration) | {flo:.2f} s | {f_runs} |
| ratio drill / floor | {rto / flo:.2f}x | target <= 2.5x; RTO target <= 5 s |

Median time of each phase on the recovery clock (smoke: from its start to all flows green; in
the lab its Route53 flip comes after that, off the clock):

| phase | median |
|---|---|
{rows}
"""
    write_section("drill", body)
    print(body)


if __name__ == "__main__":
    main()
