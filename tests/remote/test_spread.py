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
