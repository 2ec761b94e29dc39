"""Benchmark `drkit lab up` from nothing, a second `lab up` on a running lab, status and down.

Runs the installed `drkit` command (start-up and imports included) against a lab in a fresh
state directory under /tmp on a free port range, with the plan's settings (4 payments instances
per region unless DRKIT_LAB_INSTANCES says otherwise). Median of 3 runs each (--runs N).
Writes the `lab` section of BENCHMARKS.md.

    .venv/bin/python bench/bench_lab.py [--runs 3] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import ROOT, VENV_BIN, machine, median, write_section  # noqa: E402

TARGET_UP = 30.0
TARGET_AGAIN = 5.0


CPU: dict[str, list[float]] = {}


def drkit(args: list[str], env: dict[str, str], label: str = "") -> tuple[float, dict]:
    """Run `drkit ARGS --json`; (wall seconds, parsed JSON). CPU time goes to CPU[args]."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([str(VENV_BIN / "drkit"), *args, "--json"], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # drkit, ansible-playbook and its modules; not the lab's daemons (they are detached).
    CPU.setdefault(label or " ".join(args), []).append(
        after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"drkit {' '.join(args)} failed ({proc.returncode}): "
                         f"{proc.stderr.strip()[-800:]}")
    return wall, json.loads(proc.stdout)


def loadavg() -> float:
    return os.getloadavg()[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-write", action="store_true", help="print, do not touch BENCHMARKS.md")
    opts = ap.parse_args()

    from tests.conftest import free_port_base  # the same free-range finder as the tests

    root = Path(tempfile.mkdtemp(prefix="drkit-bench-lab-", dir="/tmp"))
    os.chmod(root, 0o755)
    state = root / "state"
    env = {**os.environ, "DRKIT_LAB_DIR": str(state),
           "DRKIT_LAB_PORT_BASE": str(free_port_base())}
    cold: list[float] = []
    again: list[float] = []
    status_t: list[float] = []
    down_t: list[float] = []
    parts: list[dict] = []
    load_before = loadavg()
    try:
        for i in range(opts.runs):
            shutil.rmtree(state, ignore_errors=True)  # from nothing: no CA, no data, no runs
            wall, st = drkit(["lab", "up"], env, "cold")
            assert st["up"], st
            cold.append(wall)
            parts.append({r["playbook"]: r["duration_s"] for r in st.get("runs", [])})
            print(f"up from nothing #{i + 1}: {wall:.2f} s (changed {st['changed']})",
                  flush=True)
            wall, st = drkit(["lab", "up"], env, "again")
            assert st["up"] and st["changed"] == 0, st
            again.append(wall)
            print(f"up again       #{i + 1}: {wall:.2f} s (changed {st['changed']})", flush=True)
            wall, st = drkit(["lab", "status"], env)
            status_t.append(wall)
            wall, st = drkit(["lab", "down"], env)
            assert not st["up"], st
            down_t.append(wall)
            print(f"status {status_t[-1]:.2f} s, down {wall:.2f} s", flush=True)
    finally:
        subprocess.run([str(VENV_BIN / "drkit"), "lab", "down", "-q"], env=env, cwd=ROOT,
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    load_after = loadavg()

    def row(what: str, values: list[float], target: float | None, cmd: str) -> str:
        m = median(values)
        verdict = "" if target is None else (
            f"<= {target:g} s ({'ok' if m <= target else 'OVER TARGET'})")
        runs = ", ".join(f"{v:.2f}" for v in values)
        cpu = median(CPU.get(cmd, [0.0]))
        return f"| {what} | {m:.2f} s | {verdict} | {cpu:.1f} s | {runs} |"

    instances = os.environ.get("DRKIT_LAB_INSTANCES", "plan default (4)")
    svc = median([p.get("services.yml", 0.0) for p in parts])
    aws = median([p.get("aws.yml", 0.0) for p in parts])
    body = f"""## Lab (bench/bench_lab.py)

{machine()}; {datetime.now(UTC):%Y-%m-%d}; payments instances per region: {instances}.
The installed `drkit` command (start-up included), median of {opts.runs} runs each; "from
nothing" starts from an empty state directory (new CA, initdb, basebackup, stacks, records).

| command | median wall | target | median CPU | runs (s) |
|---|---|---|---|---|
{row("`drkit lab up` from nothing", cold, TARGET_UP, "cold")}
{row("`drkit lab up` on a running lab (changed=0)", again, TARGET_AGAIN, "again")}
{row("`drkit lab status`", status_t, None, "lab status")}
{row("`drkit lab down`", down_t, None, "lab down")}

`lab up` runs playbooks/lab/services.yml and playbooks/lab/aws.yml side by side (medians
{svc:.1f} s and {aws:.1f} s from nothing); on a running lab one probe per playbook finds every
unit in place and the rest is skipped. CPU is user+sys of drkit, ansible-playbook and the
modules (not of the lab's daemons), which other work on the machine does not lengthen. Load
average (1 min) before/after: {load_before:.2f} /
{load_after:.2f} (the machine is shared: other work lengthens wall times).
"""
    print(body)
    if not opts.no_write:
        write_section("lab", body)
        print(f"wrote the lab section of {ROOT / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    main()
