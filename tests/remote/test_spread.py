"""A runbook-style playbook over a 60-host inventory split across two execution nodes (issue
18): each node runs its slice (streamed, --limit), the merged result is the local run's."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from drkit.engine import inventory_hosts, run_playbook, run_spread

pytestmark = [pytest.mark.lab]

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


def test_sixty_hosts_on_two_nodes_give_the_local_result(nodes, tmp_path):
    pb, inv = fleet(tmp_path)
    hosts = inventory_hosts(inv)
    assert len(hosts) == HOSTS
    remote_dir, local_dir = tmp_path / "remote", tmp_path / "local"
    remote_dir.mkdir()
    local_dir.mkdir()
    two = [nodes.node("primary"), nodes.node("secondary")]
    spread = run_spread(pb, nodes=two, hosts=hosts, inventory=inv, content_root=tmp_path,
                        artifacts_dir=tmp_path / "a-spread",
                        extravars={"drkit_dir": str(remote_dir)}, forks=20)
    local = run_playbook(pb, inventory=inv, content_root=tmp_path,
                         artifacts_dir=tmp_path / "a-local",
                         extravars={"drkit_dir": str(local_dir)}, forks=20)
    assert spread.ok and local.ok, (spread.failure, local.failure)

    def per_host(r):
        return sorted((t.host, t.task, t.status) for t in r.tasks)

    assert per_host(spread) == per_host(local) and len(per_host(local)) == 3 * HOSTS
    assert {h: (s.ok, s.changed, s.skipped) for h, s in spread.stats.items()} == \
        {h: (s.ok, s.changed, s.skipped) for h, s in local.stats.items()}
    assert len(spread.stats) == HOSTS
    # Each half of the fleet really ran on its node: the first 30 hosts in the primary
    # region's namespace, the other 30 in the secondary's; the local run in this one.
    where = {h: (remote_dir / h).read_text() for h in hosts}
    assert {where[h] for h in hosts[:30]} == {nodes.netns_inode("primary")}
    assert {where[h] for h in hosts[30:]} == {nodes.netns_inode("secondary")}
    assert {(local_dir / h).read_text() for h in hosts} == {os.readlink("/proc/self/ns/net")}
    assert spread.stdout_path.read_text().count("PLAY RECAP") == 2


def test_a_runbook_over_sixty_hosts_on_two_nodes_matches_a_local_run(nodes, tmp_path):
    """`drkit runbook run` on an environment with two execution nodes spreads its hosts over
    them; the outcome (verdict, per-host stats, changes) is the local environment's."""
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
    (tmp_path / "drkit.yml").write_text(yaml.safe_dump(plan))
    generate_keypair(tmp_path / "keys" / "evidence.key")
    outs = {}
    for env in ("fleet", "fleet-local"):
        d = tmp_path / f"marks-{env}"
        d.mkdir()
        r = subprocess.run([str(Path(sys.executable).parent / "drkit"), "runbook", "run",
                            "patch", "-e", env, "-p", str(tmp_path / "drkit.yml"),
                            "--extra-var", f"drkit_dir={d}", "--json"],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        outs[env] = json.loads(r.stdout)
    spread, local = outs["fleet"], outs["fleet-local"]
    assert spread["verdict"] == local["verdict"] == "pass"
    assert spread["stats"] == local["stats"] and len(spread["stats"]) == HOSTS
    assert sorted(map(str, spread["changed"])) == sorted(map(str, local["changed"]))
    assert spread["changed_count"] == local["changed_count"] == HOSTS
    hosts = sorted(spread["stats"])
    marks = {h: (tmp_path / "marks-fleet" / h).read_text() for h in hosts}
    # One half per node (in the plan's order of execution_nodes), each in its region.
    first, second = {marks[h] for h in hosts[:30]}, {marks[h] for h in hosts[30:]}
    assert len(first) == len(second) == 1 and first | second == {
        nodes.netns_inode("primary"), nodes.netns_inode("secondary")}
