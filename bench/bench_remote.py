"""A runbook-style playbook over 60 hosts on two execution nodes against one (issue 18).

Builds the namespaced topology's places only (region namespaces + sshd: drkit.lab.netns.ensure,
the code `lab up` runs), then alternates: all 60 hosts streamed to the secondary region's node
(`engine.run_playbook(node=...)`), and the same 60 split across the primary's and the
secondary's nodes (`engine.run_spread`). Both nodes are this 2-core machine, so the figure shows
the cost of the split (two workers, two ssh streams), not the gain separate machines would give.
Writes the `remote` section of BENCHMARKS.md. Needs root (network namespaces).

    .venv/bin/python bench/bench_remote.py [--runs 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine, median, write_section  # noqa: E402

HOSTS = 60
FORKS = 20
PLAYBOOK = """\
- name: Patch the fleet
  hosts: all
  gather_facts: false
  tasks:
    - name: Read where this host's tasks run
      ansible.builtin.command: readlink /proc/self/ns/net
      changed_when: false
    - name: Write the host's patch marker
      ansible.builtin.copy:
        dest: "{{ drkit_dir }}/{{ inventory_hostname }}"
        content: "patched"
        mode: "0600"
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    from drkit.config import ExecutionNode, lab_config, load_plan
    from drkit.engine import inventory_hosts, run_playbook, run_spread
    from drkit.lab import netns
    from drkit.remote import from_config

    why = netns.available()
    if why:
        raise SystemExit(f"bench_remote needs the namespaces topology: {why}")
    root = Path(tempfile.mkdtemp(prefix="drkit-bench-remote-"))
    (root / "patch.yml").write_text(PLAYBOOK)
    inv = root / "fleet.ini"
    inv.write_text("[fleet]\n" + "".join(
        f"web{i:02d} ansible_connection=local ansible_python_interpreter={sys.executable}\n"
        for i in range(HOSTS)))
    (root / "drkit.yml").write_text(
        "version: 1\nregions: {primary: eu-west-1, secondary: eu-central-1}\n"
        "environments: {lab: {inventory: fleet.ini, lab: true}}\n"
        "services: {payments: {tier: 1, rto: 5m, rpo: 0s}}\n"
        "scenarios: {s: {services: [payments], phases: [{name: a, playbook: patch.yml, "
        "starts_clock: true, stops_clock: true}]}}\n")
    cfg = dataclasses.replace(lab_config(load_plan(root / "drkit.yml")),
                              state_dir=(root / "lab").resolve(), topology="namespaces",
                              netns_cidr=netns.free_cidr())
    cfg.state_dir.mkdir()
    n = netns.net(cfg)

    def node(role: str):
        return from_config(n.region(role).region, ExecutionNode(
            host=n.region(role).address, identity_file=str(n.client_key),
            ssh_executable=str(n.bin_dir / "ssh"),
            ssh_options=(f"UserKnownHostsFile={n.known_hosts}", "StrictHostKeyChecking=yes"),
            python=sys.executable))

    one: list[float] = []
    two: list[float] = []
    try:
        netns.ensure(cfg, {})
        hosts = inventory_hosts(inv)
        assert len(hosts) == HOSTS
        nodes = [node("primary"), node("secondary")]
        for i in range(args.runs):
            for label, times in (("one", one), ("two", two)):
                out = root / f"out-{label}-{i}"
                out.mkdir()
                common = {"inventory": inv, "content_root": root, "forks": FORKS,
                          "extravars": {"drkit_dir": str(out)},
                          "artifacts_dir": root / f"a-{label}-{i}"}
                start = time.perf_counter()
                if label == "one":
                    r = run_playbook(root / "patch.yml", node=nodes[1], **common)
                else:
                    r = run_spread(root / "patch.yml", nodes=nodes, hosts=hosts, **common)
                times.append(time.perf_counter() - start)
                if not r.ok or len(list(out.iterdir())) != HOSTS:
                    raise SystemExit(f"run {label} {i} did not patch every host: {r.failure}")
                print(f"{label} node(s) run {i}: {times[-1]:.2f} s", flush=True)
    finally:
        netns.destroy(cfg)
    m1, m2 = median(one), median(two)
    body = f"""## Remote execution: 60 hosts on one or two execution nodes (bench/bench_remote.py)

{machine()}; {HOSTS} local-connection hosts, 2 tasks each (a command, a copy), forks {FORKS}
per node; each run streams the job to the node(s) with ansible-runner transmit, `ssh node python
-m ansible_runner worker`, process (issue 18). Both nodes are the namespaced lab's region sshd on
this same 2-core machine, so two nodes share the same CPUs: the figure is the cost of splitting
(two workers, two streams), not what separate machines would gain. Runs alternate, median of
{args.runs} each (one node: {", ".join(f"{t:.2f}" for t in one)} s; two nodes:
{", ".join(f"{t:.2f}" for t in two)} s).

| run | median | |
|---|---|---|
| all {HOSTS} hosts on the secondary region's node (baseline) | {m1:.2f} s | |
| {HOSTS // 2} + {HOSTS // 2} hosts on the two regions' nodes (`engine.run_spread`) | {m2:.2f} s | |
| ratio two / one | {m2 / m1:.3f} | |
"""
    write_section("remote", body)
    print(body)


if __name__ == "__main__":
    main()
