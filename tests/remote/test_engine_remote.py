"""A playbook run on an execution node through ansible-runner's streaming interface (issue 18):
transmit here, `ansible-runner worker` over SSH in the secondary region's namespace, process
here; the events, stats, set_stats values and stdout come back as with a local run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from drkit.engine import RunListener, RunStatus, run_playbook
from drkit.errors import RunFailed

pytestmark = [pytest.mark.lab]

PLAYBOOK = """\
- name: Where does this run
  hosts: all
  gather_facts: false
  tasks:
    - name: Read this process's network namespace
      ansible.builtin.command: readlink /proc/self/ns/net
      register: drkit_netns
      changed_when: false
    - name: Publish it
      ansible.builtin.set_stats:
        data: {netns: "{{ drkit_netns.stdout }}", secret_seen: "{{ drkit_secret }}"}
        aggregate: false
    - name: Touch a file
      ansible.builtin.file:
        path: "{{ drkit_dir }}/touched-{{ inventory_hostname }}"
        state: touch
        mode: "0600"
"""


def _setup(tmp_path: Path, hosts: int = 1) -> tuple[Path, Path]:
    pb = tmp_path / "where.yml"
    pb.write_text(PLAYBOOK)
    inv = tmp_path / "inv.ini"
    inv.write_text("".join(f"h{i} ansible_connection=local ansible_python_interpreter="
                           f"{sys.executable}\n" for i in range(hosts)))
    return pb, inv


class Seen(RunListener):
    def __init__(self) -> None:
        self.tasks: list[str] = []

    def task_finished(self, result) -> None:
        self.tasks.append(f"{result.host}:{result.task}:{result.status}")


def test_a_playbook_runs_on_the_node_and_its_events_come_back(nodes, tmp_path):
    pb, inv = _setup(tmp_path, hosts=3)
    out = tmp_path / "out"
    out.mkdir()
    seen_remote, seen_local = Seen(), Seen()
    remote = run_playbook(pb, inventory=inv, content_root=tmp_path, artifacts_dir=tmp_path / "r",
                          extravars={"drkit_secret": "s3cr3t", "drkit_dir": str(out)},
                          listener=seen_remote, node=nodes.node())
    local = run_playbook(pb, inventory=inv, content_root=tmp_path, artifacts_dir=tmp_path / "l",
                         extravars={"drkit_secret": "s3cr3t", "drkit_dir": str(out)},
                         listener=seen_local)
    assert remote.ok and local.ok, (remote.failure, local.failure)
    # It ran in the secondary region's namespace, not the controller's.
    assert remote.stat_values("netns") == nodes.netns_inode("secondary")
    assert local.stat_values("netns") == os.readlink("/proc/self/ns/net")
    assert remote.stat_values("netns") != local.stat_values("netns")
    # Extra vars travelled in the job (env/extravars, !unsafe), and nothing else differs.
    assert remote.stat_values("secret_seen") == "s3cr3t"
    assert sorted(seen_remote.tasks) == sorted(seen_local.tasks)
    assert [(t.host, t.task, t.status) for t in remote.tasks] and \
        sorted((t.host, t.task, t.status) for t in remote.tasks) == \
        sorted((t.host, t.task, t.status) for t in local.tasks)
    assert {h: (s.ok, s.changed) for h, s in remote.stats.items()} == \
        {h: (s.ok, s.changed) for h, s in local.stats.items()}
    assert [p.name for p in remote.plays] == ["Where does this run"]
    # ansible-runner's artifacts came back: stdout, and our job events.
    assert "PLAY RECAP" in remote.stdout_path.read_text()
    assert remote.events_path.read_text().count('"runner_on_ok"') == 9
    recap = [r.stdout_path.read_text().split("PLAY RECAP")[1].split("CUSTOM STATS")[0]
             for r in (remote, local)]
    assert recap[0] == recap[1]


def test_a_failed_task_on_the_node_is_a_failed_run(nodes, tmp_path):
    pb = tmp_path / "fail.yml"
    pb.write_text("- name: Fails\n  hosts: all\n  gather_facts: false\n  tasks:\n"
                  "    - name: Say no\n      ansible.builtin.fail:\n        msg: no way\n")
    _, inv = _setup(tmp_path)
    r = run_playbook(pb, inventory=inv, content_root=tmp_path, artifacts_dir=tmp_path / "a",
                     node=nodes.node())
    assert r.status == RunStatus.FAILED and r.rc != 0
    assert r.failure is not None and r.failure.task == "Say no" and "no way" in r.failure.message


def test_an_unreachable_node_is_one_clear_error(nodes, tmp_path):
    import dataclasses

    pb, inv = _setup(tmp_path)
    node = dataclasses.replace(nodes.node(), host="10.255.255.1",
                               ssh_options=("ConnectTimeout=2",))
    with pytest.raises(RunFailed, match=r"execution node root@10.255.255.1 \(eu-central-1\): "
                       r"no result from ansible-runner worker \(.*\); check the node"):
        run_playbook(pb, inventory=inv, content_root=tmp_path, artifacts_dir=tmp_path / "a",
                     node=node)


def test_a_cancelled_remote_run_leaves_nothing_running_on_the_node(nodes, tmp_path):
    """Cancel (the drill's SIGTERM, a gate refused) ends the ssh stream; the node's worker and
    its ansible-playbook go with it rather than keep changing the environment."""
    import time

    marker = "61.0437"
    pb = tmp_path / "long.yml"
    pb.write_text("- name: Long\n  hosts: all\n  gather_facts: false\n  tasks:\n"
                  f"    - name: Wait\n      ansible.builtin.command: sleep {marker}\n"
                  "      changed_when: true\n")
    _, inv = _setup(tmp_path)

    def running() -> list[int]:
        out = []
        for p in os.listdir("/proc"):
            if p.isdigit():
                try:
                    with open(f"/proc/{p}/cmdline", "rb") as f:
                        if f.read() == f"sleep\0{marker}\0".encode():
                            out.append(int(p))
                except OSError:
                    pass
        return out

    started = time.monotonic()

    def cancel() -> bool:
        return bool(running()) or time.monotonic() - started > 120

    r = run_playbook(pb, inventory=inv, content_root=tmp_path, artifacts_dir=tmp_path / "a",
                     node=nodes.node(), cancel=cancel)
    assert r.status in (RunStatus.CANCELED, RunStatus.FAILED), r.status
    deadline = time.monotonic() + 30
    while running() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert running() == [], "the node still runs the cancelled task"
