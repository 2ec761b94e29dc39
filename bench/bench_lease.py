"""What proving the shared lease before every phase costs a drill (issue 18).

With `state` (a shared lease), a drill's one ansible-playbook run holds at a gate play before
each phase but the first until the driver has proven its lease (a fenced renewal in S3), so a
driver that lost the lease starts no further phase; without it, nothing waits between phases.
(The first design, one run per phase, cost 5.58 s per extra phase at load 11.5: 15.61 s
against 37.92 s.) The same small scenario
(5 recovery phases of one real task each, local connection) runs both ways, alternating, with
`drkit drill run` (a real moto server holds the state). Writes the `remote-lease` section of
BENCHMARKS.md.

    .venv/bin/python bench/bench_lease.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine, median, write_section  # noqa: E402

PHASES = ["preflight", "inject-fault", "promote", "traffic", "smoke"]
DRKIT = str(Path(sys.executable).parent / "drkit")
MOTO = str(Path(sys.executable).parent / "moto_server")


def _plan(root: Path, endpoint: str | None) -> Path:
    import yaml

    for name in PHASES:
        (root / f"{name}.yml").write_text(
            f"- name: {name}\n  hosts: all\n  gather_facts: false\n  tasks:\n"
            f"    - name: Step of {name}\n      ansible.builtin.command: \"true\"\n"
            "      changed_when: true\n")
    (root / "inv.ini").write_text(
        f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    env: dict = {"inventory": "inv.ini"}
    if endpoint:
        env["state"] = {"s3": "s3://drkit-bench/drills", "region": "eu-north-1",
                        "endpoint_url": endpoint, "lease": "60s"}
    plan = {"version": 1, "regions": {"primary": "eu-west-1", "secondary": "eu-central-1"},
            "environments": {"prod": env},
            "services": {"payments": {"tier": 1, "rto": "10m", "rpo": "0s"}},
            "scenarios": {"s": {"services": ["payments"], "phases": [
                {"name": n, "playbook": f"{n}.yml", **({"starts_clock": True}
                                                      if n == "inject-fault" else {}),
                 **({"stops_clock": True} if n == "smoke" else {})} for n in PHASES]}}}
    plan["evidence"] = {"store": "./evidence", "signing_key": "keys/evidence.key"}
    from drkit.evidence import generate_keypair

    generate_keypair(root / "keys" / "evidence.key")
    path = root / "drkit.yml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="drkit-bench-lease-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    moto = subprocess.Popen([MOTO, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "eu-north-1"}
    times: dict[str, list[float]] = {"one run": [], "gated": []}
    try:
        import boto3

        for _ in range(100):
            try:
                boto3.client("s3", endpoint_url=endpoint, region_name="eu-north-1",
                             aws_access_key_id="testing", aws_secret_access_key="testing"
                             ).create_bucket(Bucket="drkit-bench", CreateBucketConfiguration={
                                 "LocationConstraint": "eu-north-1"})
                break
            except Exception:  # noqa: BLE001 - moto still starting
                time.sleep(0.2)
        plans = {}
        for label, ep in (("one run", None), ("gated", endpoint)):
            (root / label.replace(" ", "-")).mkdir()
            plans[label] = _plan(root / label.replace(" ", "-"), ep)
        for i in range(args.runs):
            for label, plan in plans.items():
                start = time.perf_counter()
                cp = subprocess.run([DRKIT, "drill", "run", "s", "-e", "prod", "-p", str(plan),
                                     "--json"], env=env, capture_output=True,
                                    text=True, timeout=600)
                took = time.perf_counter() - start
                out = json.loads(cp.stdout)
                if [p["status"] for p in out["phases"]] != ["ok"] * len(PHASES):
                    raise SystemExit(f"{label} run {i}: {out['phases']}")
                times[label].append(took)
                print(f"{label} run {i}: {took:.2f} s", flush=True)
    finally:
        moto.terminate()
        moto.wait(10)
        shutil.rmtree(root, ignore_errors=True)
    m1, m2 = median(times["one run"]), median(times["gated"])
    load = os.getloadavg()[0]
    body = f"""## Remote execution: a lease proven before every phase (bench/bench_lease.py)

{machine()}; `drkit drill run` of {len(PHASES)} recovery phases of one real task each (local
connection), in one ansible-playbook run, without shared state and with `state` in a moto
server (issue 18: a gate play before each phase but the first waits until the driver proved
its lease with a fenced renewal; journal entries go to S3), alternating, median of {args.runs}
each (no state: {", ".join(f"{t:.2f}" for t in times["one run"])} s; gated:
{", ".join(f"{t:.2f}" for t in times["gated"])} s); load average {load:.1f} at the end. The
first design, one ansible-playbook run per phase, measured 15.61 s against 37.92 s (5.58 s per
extra phase, load 11.5) and was replaced by the gate.

| drill | median | |
|---|---|---|
| no shared state (baseline) | {m1:.2f} s | |
| shared state, lease proven at a gate before each phase | {m2:.2f} s | |
| ratio | {m2 / m1:.2f} | |
| cost per gate | {(m2 - m1) / (len(PHASES) - 1):.2f} s | |
"""
    write_section("remote-lease", body)
    print(body)


if __name__ == "__main__":
    main()
