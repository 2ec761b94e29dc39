"""A runbook over a 60-host inventory split across two execution nodes (issue 18): each node
runs its slice (drkit.engine.run_spread: one streamed run per node, --limit), the merged result
is the local run's. One spread run and one local run serve every check (they were two pairs of
60-host runs, one through the engine and one through the CLI, 200 s of CI under load)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.lab]

_RESULTS = ("runner_on_ok", "runner_on_skipped", "runner_on_failed", "runner_on_unreachable")

HOSTS = 60
PLAYBOOK = """\
- name: Patch the fleet
  hosts: all
  gather_facts: false
  tasks:
    - name: Read where this host's tasks run
      ansible.builtin.command: readlink /proc/self/ns/net
      register: drkit_where
      changed_when: false
    - name: Write the host's patch marker
      ansible.builtin.copy:
        dest: "{{ drkit_dir }}/{{ inventory_hostname }}"
        content: "{{ drkit_where.stdout }}"
        mode: "0600"
    - name: Skip what does not apply
      ansible.builtin.debug:
        msg: never
      when: inventory_hostname == 'nowhere'
"""


def fleet(tmp_path: Path) -> tuple[Path, Path]:
    pb = tmp_path / "patch.yml"
    pb.write_text(PLAYBOOK)
    inv = tmp_path / "fleet.ini"
    inv.write_text("[fleet]\n" + "".join(
        f"web{i:02d} ansible_connection=local ansible_python_interpreter={sys.executable}\n"
        for i in range(HOSTS)))
    return pb, inv


def test_a_runbook_over_sixty_hosts_on_two_nodes_matches_a_local_run(nodes, tmp_path):
    """`drkit runbook run` on an environment with two execution nodes spreads its hosts over
    them; the outcome (verdict, per-host stats, changes, every task's result on every host)
    is the local environment's, and each half of the fleet really ran on its node."""
    import json
    import subprocess

    import yaml

    from drkit.evidence import generate_keypair

    pb, inv = fleet(tmp_path)
    (tmp_path / "runbooks").mkdir()
    (tmp_path / "runbooks" / "patch.yml").write_text(
        "# purpose: Patch the fleet (a test runbook).\n# risk: low - writes marker files\n"
        "# requires: drkit_dir\n" + PLAYBOOK)
    node = {role: nodes.node_config(role) for role in ("primary", "secondary")}
    plan = {
        "version": 1,
        "regions": {"primary": nodes.net.region("primary").region,
                    "secondary": nodes.net.region("secondary").region},
        "environments": {
            "fleet": {"inventory": inv.name, "execution_nodes": {
                nodes.net.region(r).region: node[r] for r in ("primary", "secondary")}},
            "fleet-local": {"inventory": inv.name}},
        "services": {"payments": {"tier": 1, "rto": "5m", "rpo": "0s"}},
        "scenarios": {"s": {"services": ["payments"], "phases": [
            {"name": "a", "playbook": pb.name, "starts_clock": True, "stops_clock": True}]}},
        "evidence": {"store": "./evidence", "signing_key": "keys/evidence.key"},
    }
    (tmp_path / "drkit.yml").write_text(yaml.safe_dump(plan, sort_keys=False))
    generate_keypair(tmp_path / "keys" / "evidence.key")
    # Both runs at once (two environments: two locks; the evidence store takes its own lock
    # per record): the test's wall time is the slower run, not the sum.
    runs = {}
    for env in ("fleet", "fleet-local"):
        d = tmp_path / f"marks-{env}"
        d.mkdir()
        runs[env] = subprocess.Popen([str(Path(sys.executable).parent / "drkit"), "runbook",
                                      "run", "patch", "-e", env, "-p",
                                      str(tmp_path / "drkit.yml"), "--extra-var",
                                      f"drkit_dir={d}", "--json"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outs = {}
    for env, proc in runs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, out + err
        outs[env] = json.loads(out)
    spread, local = outs["fleet"], outs["fleet-local"]
    assert spread["verdict"] == local["verdict"] == "pass"
    assert spread["stats"] == local["stats"] and len(spread["stats"]) == HOSTS
    assert sorted(map(str, spread["changed"])) == sorted(map(str, local["changed"]))
    assert spread["changed_count"] == local["changed_count"] == HOSTS
    hosts = sorted(spread["stats"])
    assert hosts == [f"web{i:02d}" for i in range(HOSTS)]

    def per_host(out):
        """Every task's result on every host, from the run's job events (the merged events of
        both nodes for the spread run)."""
        events = Path(out["artifacts"], "job_events.jsonl").read_text().splitlines()
        return sorted((d["host"], d["task"], e["event"]) for e in map(json.loads, events)
                      if e["event"] in _RESULTS and (d := e["event_data"]))

    assert per_host(spread) == per_host(local) and len(per_host(local)) == 3 * HOSTS
    # One half per node, in the plan's order of execution_nodes: the first 30 hosts in the
    # primary region's namespace, the other 30 in the secondary's; the local run here.
    marks = {h: (tmp_path / "marks-fleet" / h).read_text() for h in hosts}
    assert {marks[h] for h in hosts[:30]} == {nodes.netns_inode("primary")}
    assert {marks[h] for h in hosts[30:]} == {nodes.netns_inode("secondary")}
    assert {(tmp_path / "marks-fleet-local" / h).read_text() for h in hosts} == {
        os.readlink("/proc/self/ns/net")}
    assert Path(spread["artifacts"], "stdout").read_text().count("PLAY RECAP") == 2
