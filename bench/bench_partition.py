"""RTO and RPO of a partitioned region against a crashed one, on the namespaces topology
(issue 17), and the time from the fault to the fence.

One lab of its own (namespaces topology: its own state directory, ports, /24 and namespace
names). Crash drills (`region-failover`, today's phases) and partition drills
(`region-partition`: in-region client, partition, fence, ..., heal, failback, reconcile-clients)
alternate, so both see the same machine load. Medians of N each. Needs root.

    .venv/bin/python bench/bench_partition.py [--runs 3]
    .venv/bin/python bench/bench_partition.py --summaries /tmp/drkit-bench-partition-XXXX/lab
        (rewrite the section from a previous run's drills: <lab>/runs/*/summary.json)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, VENV_BIN, machine, write_section  # noqa: E402

sys.path.insert(0, str(ROOT))
from tests.drills import make_plan  # noqa: E402
from tests.netns.test_netns_lab import _partition_scenarios  # noqa: E402

DRKIT = str(VENV_BIN / "drkit")


def drkit(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([DRKIT, *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise SystemExit(f"drkit {' '.join(args)} failed ({proc.returncode}):\n"
                         f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc


def _fence_s(state: Path, out: dict) -> float | None:
    run = state / "runs" / f"{out['id']}-{out['scenario']}"
    try:
        part = json.loads((run / "partition.json").read_text())["partitioned_at"]
        fence = json.loads((run / "fence.json").read_text())["fenced_at"]
    except (OSError, ValueError, KeyError):
        return None
    return (datetime.fromisoformat(fence) - datetime.fromisoformat(part)).total_seconds()


CLOCK_PHASES = {
    "region-failover": ["inject-fault", "recreate-stack", "promote-data", "failover-traffic",
                        "smoke"],
    "region-partition": ["inject-fault", "fence", "recreate-stack", "promote-data",
                         "failover-traffic", "smoke"],
}


def _on_clock(drill: dict, name: str) -> float:
    """Seconds of phase `name` on the recovery clock: its duration, cut at the clock's stop."""
    ph = {p["name"]: p for p in drill["phases"]}
    started = datetime.fromisoformat(ph[name]["started_at"])
    stopped = (datetime.fromisoformat(ph["inject-fault"]["started_at"])
               + timedelta(seconds=drill["rto"]["actual_s"]))
    return max(0.0, min(ph[name]["duration_s"], (stopped - started).total_seconds()))


def _collect(state: Path) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {s: [] for s in CLOCK_PHASES}
    for f in sorted((state / "runs").glob("*/summary.json")):
        out = json.loads(f.read_text())
        if out.get("scenario") in runs and out.get("verdict") == "pass":
            runs[out["scenario"]].append(out)
    return runs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--port-base", type=int, help="default: a free range")
    ap.add_argument("--cidr", help="default: a /24 no namespace on this machine uses")
    ap.add_argument("--summaries", type=Path, help="a previous run's lab state dir: no drills")
    args = ap.parse_args()
    if args.summaries:
        state = args.summaries
    else:
        state = run_drills(args)
    runs = _collect(state)
    fences = [f for d in runs["region-partition"] if (f := _fence_s(state, d)) is not None]
    n = min(len(v) for v in runs.values())
    if n == 0:
        raise SystemExit(f"no passing drills of both scenarios under {state}/runs")
    write(runs, fences, n)


def run_drills(args: argparse.Namespace) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix="drkit-bench-partition-", dir="/tmp"))
    os.chmod(tmp, 0o755)
    state = tmp / "lab"
    if args.port_base is None:  # never the range or /24 of a lab already running here
        from tests.conftest import free_port_base

        args.port_base = free_port_base()
    if args.cidr is None:
        from drkit.lab.netns import free_cidr

        args.cidr = free_cidr()
    os.environ.update({"DRKIT_LAB_DIR": str(state), "DRKIT_LAB_PORT_BASE": str(args.port_base),
                       "DRKIT_LAB_TOPOLOGY": "namespaces", "DRKIT_LAB_NETNS_CIDR": args.cidr,
                       "DRKIT_LAB_INSTANCES": os.environ.get("DRKIT_LAB_INSTANCES", "2")})
    (tmp / "plan").mkdir()
    plan = make_plan(tmp / "plan", _partition_scenarios)
    os.environ["DRKIT_PLAN"] = str(plan)
    drkit("lab", "up")
    try:
        for i in range(args.runs):
            for scenario in CLOCK_PHASES:
                out = json.loads(drkit("drill", "run", scenario, "--env", "lab", "--json",
                                       check=False).stdout)
                if out["verdict"] != "pass":
                    raise SystemExit(f"{scenario} {i + 1} did not pass: {out['reasons']}")
                print(f"run {i + 1} {scenario}: RTO {out['rto']['actual_s']:.2f}s, lost "
                      f"{out['reconciliation']['lost_count']}", flush=True)
    finally:
        drkit("lab", "down", check=False)  # runs/ (the summaries) stays
    return state


def write(runs: dict[str, list[dict]], fences: list[float], n: int) -> None:
    def row(name: str, scenario: str) -> str:
        ds = runs[scenario]
        rtos = [d["rto"]["actual_s"] for d in ds]
        rpos = [d["reconciliation"]["rpo_s"] for d in ds]
        lost = sum(d["reconciliation"]["lost_count"] for d in ds)
        lost_fb = sum((d.get("after_failback") or {}).get("lost_count") or 0 for d in ds)
        return (f"| {name} | {statistics.median(rtos):.2f} s | "
                f"{', '.join(f'{x:.2f}' for x in rtos)} | {statistics.median(rpos):.2f} s | "
                f"{lost} / {lost_fb} |")

    def phase_row(ph: str) -> str:
        cells = []
        for scenario in CLOCK_PHASES:
            if ph in CLOCK_PHASES[scenario]:
                cells.append(f"{statistics.median(_on_clock(d, ph) for d in runs[scenario]):.2f} s")
            else:
                cells.append("-")
        return f"| {ph} | " + " | ".join(cells) + " |"

    load = os.getloadavg()[0]
    fence_line = (f"{statistics.median(fences):.2f} s (runs: "
                  f"{', '.join(f'{x:.2f}' for x in fences)})" if fences else "not measured")
    phases = "\n".join(phase_row(ph) for ph in CLOCK_PHASES["region-partition"])
    body = f"""## Partition against crash (bench/bench_partition.py)

{machine()}; load average {load:.1f} when it was written; {n} crash drills and {n} partition
drills alternating on one lab with the namespaces topology (docs/topology.md; 2 payments
instances per region, synchronous replication), on a box shared with other test sessions. RPO
is measured from data (the canary through the entry point); the partition drill's in-region
client is reconciled by its reconcile-clients phase, which passed in every run.

| fault | RTO median | RTO runs | RPO median | canary lost (recovery / after failback) |
|---|---|---|---|---|
{row("crash (region-failover)", "region-failover")}
{row("partition, fenced (region-partition)", "region-partition")}

Fault to fence (partition.json's time, taken in the command that cuts the link, to
fence.json's, taken as soon as the stop of the old primary's database returned): {fence_line}.
The partition drill's clock also carries the fence phase's confirmation (is the database down,
does anything listen on its port inside the region).

Median time of each phase on the recovery clock:

| phase | crash | partition |
|---|---|---|
{phases}
"""
    write_section("partition", body)
    print(body)


if __name__ == "__main__":
    main()
