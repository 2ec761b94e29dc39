"""Issue 13: every Python module of a local-connection task runs in Ansible's worker
(drkit.dr.warmup installs plugin_utils/inworker.py), with the same results as Ansible's own path
(DRKIT_INPROCESS=0: each module in a fresh interpreter), through real ansible-playbook runs."""

from __future__ import annotations

import json
import os
import socket
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from drkit import engine

REPO = Path(__file__).resolve().parents[2]
INVENTORY = REPO / "inventories" / "lab" / "hosts.yml"

# A module of a collection of the test's own: reports where it ran, warns on request, fails or
# raises on request.
PROBE = '''\
#!/usr/bin/python
from __future__ import annotations

DOCUMENTATION = """
module: probe
short_description: a test module
description: [Reports where it ran.]
options:
  warn: {type: bool, default: false, description: [Warn.]}
  fail: {type: bool, default: false, description: [fail_json.]}
  boom: {type: bool, default: false, description: [Raise.]}
  secret: {type: str, no_log: true, description: [Hidden.]}
author: drkit maintainers (@drkit)
"""

import os
import sys

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(argument_spec=dict(warn=dict(type="bool", default=False),
                                              fail=dict(type="bool", default=False),
                                              boom=dict(type="bool", default=False),
                                              secret=dict(type="str", no_log=True)),
                           supports_check_mode=True)
    if module.params["warn"]:
        module.warn("probe-warning-xyz")
    if module.params["fail"]:
        module.fail_json(msg="probe failed as asked", extra=1)
    if module.params["boom"]:
        raise RuntimeError("probe-boom-xyz")
    tmp = module.tmpdir  # removed at the module's end (atexit), as in its own interpreter
    module.exit_json(changed=not module.check_mode, pid=os.getpid(), tmpdir=tmp,
                     env=os.environ.get("DRKIT_T"), cwd=os.getcwd(), secret=module.params["secret"],
                     in_worker="ansible.executor.task_executor" in sys.modules)


if __name__ == "__main__":
    main()
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(tmp: Path, tasks: str, name: str, inprocess: bool,
        env: dict[str, str] | None = None) -> engine.RunResult:
    coll = tmp / "collections" / "ansible_collections" / "drkittest" / "t" / "plugins" / "modules"
    coll.mkdir(parents=True, exist_ok=True)
    (coll / "probe.py").write_text(PROBE)
    pb = tmp / f"{name}.yml"
    pb.write_text("- name: Test\n  hosts: localhost\n  gather_facts: false\n  tasks:\n"
                  + textwrap.indent(textwrap.dedent(tasks), "    "))
    # -vvv: ansible-playbook prints an EXEC line for every process it starts on a host.
    return engine.run_playbook(
        pb, inventory=INVENTORY, content_root=REPO, artifacts_dir=tmp / f"art-{name}",
        extravars={"d": str(tmp / f"files-{name}")},
        envvars={"ANSIBLE_VERBOSITY": "3", "DRKIT_INPROCESS": "1" if inprocess else "0",
                 "ANSIBLE_COLLECTIONS_PATH": f"{tmp / 'collections'}:{REPO / 'collections'}",
                 **(env or {})})


def module_starts(r: engine.RunResult) -> int:
    """How many times ansible-playbook started this interpreter on the host (a module run)."""
    return sum(1 for line in r.stdout_path.read_text().splitlines()
               if " EXEC " in line and sys.executable in line)


def item_warnings(r: engine.RunResult) -> list[Any]:
    """The warnings of each loop item's result, from the run's job events."""
    events = (json.loads(line) for line in (r.artifacts_dir / "job_events.jsonl").open())
    return [e["event_data"]["res"].get("warnings") for e in events
            if e.get("event") == "runner_item_on_ok"]


VOLATILE = {"start", "end", "delta", "atime", "mtime", "ctime", "inode", "src", "pid", "tmpdir",
            "invocation", "creation_date", "in_worker", "version", "response_metadata"}


def same(value: Any, folder: str) -> Any:
    """A result with what differs between two runs by nature (times, pids, paths) left out."""
    if isinstance(value, dict):
        return {k: same(v, folder) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [same(v, folder) for v in value]
    if isinstance(value, str):
        return value.replace(folder, "<d>")
    return value


TASKS = """\
- name: Make the folder
  ansible.builtin.file:
    path: "{{ d }}"
    state: directory
  register: r_dir
- name: Run a command
  ansible.builtin.command: printf 'hello\\nworld'
  changed_when: false
  register: r_cmd
- name: Run a failing command
  ansible.builtin.command: sh -c 'echo out; echo err >&2; exit 3'
  failed_when: false
  changed_when: false
  register: r_fail
- name: Copy a file
  ansible.builtin.copy:
    content: "one\\n"
    dest: "{{ d }}/f"
    mode: "0640"
  register: r_copy1
- name: Copy it again
  ansible.builtin.copy:
    content: "one\\n"
    dest: "{{ d }}/f"
    mode: "0640"
  register: r_copy2
- name: Copy other content in check mode with a diff
  ansible.builtin.copy:
    content: "two\\n"
    dest: "{{ d }}/f"
    mode: "0640"
  check_mode: true
  diff: true
  register: r_check
- name: Stat it
  ansible.builtin.stat:
    path: "{{ d }}/f"
  register: r_stat
- name: Touch a file that must exist
  ansible.builtin.file:
    path: "{{ d }}/missing"
    state: file
  failed_when: false
  register: r_file
- name: Probe, warning on the first item only, with the task's environment
  drkittest.t.probe:
    warn: "{{ item }}"
    secret: hidden-value
  environment:
    DRKIT_T: set-by-task
  loop: [true, false]
  register: r_probe
- name: Probe without an environment
  drkittest.t.probe:
  register: r_after
- name: Probe in check mode
  drkittest.t.probe:
  check_mode: true
  register: r_probe_check
- name: Probe failing
  drkittest.t.probe:
    fail: true
  failed_when: false
  register: r_probe_fail
- name: Probe raising
  block:
    - name: Raise
      drkittest.t.probe:
        boom: true
  rescue:
    - name: Keep the failure
      ansible.builtin.set_fact:
        r_probe_boom: "{{ ansible_failed_result }}"
- name: Read the copied file
  ansible.builtin.slurp:
    src: "{{ d }}/f"
  register: r_slurp
- name: Publish them
  ansible.builtin.set_stats:
    data:
      results:
        dir: "{{ r_dir }}"
        cmd: "{{ r_cmd }}"
        fail: "{{ r_fail }}"
        copy1: "{{ r_copy1 }}"
        copy2: "{{ r_copy2 }}"
        check: "{{ r_check }}"
        stat: "{{ r_stat }}"
        file: "{{ r_file }}"
        probe: "{{ r_probe.results }}"
        after: "{{ r_after }}"
        probe_check: "{{ r_probe_check }}"
        probe_fail: "{{ r_probe_fail }}"
        probe_boom: "{{ r_probe_boom }}"
        slurp: "{{ r_slurp }}"
"""


def test_modules_in_the_worker_give_what_their_own_interpreters_give(tmp_path: Path) -> None:
    here = run(tmp_path, TASKS, "here", inprocess=True)
    there = run(tmp_path, TASKS, "there", inprocess=False)
    assert here.ok and there.ok, (here.failure, there.failure)
    h, t = here.facts["results"], there.facts["results"]
    assert same(h, str(tmp_path / "files-here")) == same(t, str(tmp_path / "files-there"))

    # The modules ran in the worker: no interpreter was started for them; the other way one
    # per module run (the probe says where it ran, and loop items share one worker's pid).
    assert module_starts(here) == 0
    assert module_starts(there) >= 14
    assert [p["in_worker"] for p in h["probe"]] == [True, True] and h["after"]["in_worker"]
    assert h["probe"][0]["pid"] == h["probe"][1]["pid"]
    assert not t["after"]["in_worker"] and t["probe"][0]["pid"] != t["probe"][1]["pid"]

    # And what the results say is right (not just equal).
    assert h["cmd"]["stdout"] == "hello\nworld" and h["cmd"]["rc"] == 0
    assert h["fail"]["rc"] == 3 and h["fail"]["stdout"] == "out" and h["fail"]["stderr"] == "err"
    assert h["copy1"]["changed"] and not h["copy2"]["changed"]
    assert h["check"]["changed"] and "two" in str(h["check"]["diff"])
    assert h["slurp"]["content"] == "b25lCg=="  # "one\n": check mode wrote nothing
    assert h["stat"]["stat"]["exists"] and h["stat"]["stat"]["mode"] == "0640"
    # (failed_when: false keeps the run going; the module's failure is in its message)
    assert "is absent, cannot continue" in h["file"]["msg"]
    assert h["probe_fail"]["msg"] == "probe failed as asked" and h["probe_fail"]["extra"] == 1
    assert h["probe_boom"]["failed"] and "probe-boom-xyz" in h["probe_boom"]["msg"]
    assert not h["probe_check"]["changed"]
    # The task's environment reached the module, and was gone for the next task.
    assert [p["env"] for p in h["probe"]] == ["set-by-task"] * 2 and h["after"]["env"] is None
    assert os.environ.get("DRKIT_T") is None
    # no_log: the secret is masked in the result either way.
    assert h["probe"][0]["secret"] == t["probe"][0]["secret"] != "hidden-value"
    # The module's temporary directory went with its run (atexit), as in its own interpreter.
    assert not Path(h["after"]["tmpdir"]).exists()
    # A warning belongs to the loop item that gave it: not carried into the next one (both
    # items run in one worker; ansible-playbook's display shows a warning once, so read events).
    assert item_warnings(here) == item_warnings(there) == [["probe-warning-xyz"], None]


def test_an_amazon_aws_module_in_the_worker_matches_its_own_interpreter(tmp_path: Path) -> None:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        tasks = f"""\
        - name: Make a bucket
          amazon.aws.s3_bucket:
            name: "b-{{{{ d | basename }}}}"
            state: present
            endpoint_url: http://127.0.0.1:{port}
            region: us-east-1
          register: r1
        - name: Make it again
          amazon.aws.s3_bucket:
            name: "b-{{{{ d | basename }}}}"
            state: present
            endpoint_url: http://127.0.0.1:{port}
            region: us-east-1
          register: r2
        - name: Read a bucket that is not there
          amazon.aws.s3_bucket_info:
            name: "nothere-{{{{ d | basename }}}}"
            endpoint_url: http://127.0.0.1:{port}
            region: us-east-1
          register: r3
        - name: Publish them
          ansible.builtin.set_stats:
            data:
              results: ["{{{{ r1 }}}}", "{{{{ r2 }}}}", "{{{{ r3 }}}}"]
        """
        creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        here = run(tmp_path, tasks, "here", inprocess=True, env=creds)
        there = run(tmp_path, tasks, "there", inprocess=False, env=creds)
    finally:
        server.stop()
    assert here.ok and there.ok, (here.failure, there.failure)
    h, t = here.facts["results"], there.facts["results"]
    assert same(h, "files-here") == same(t, "files-there")
    assert h[0]["changed"] and not h[1]["changed"] and h[2]["buckets"] == []
    assert module_starts(here) == 0 and module_starts(there) == 3


@pytest.mark.parametrize("why", ["become", "async"])
def test_a_task_with_become_or_async_keeps_ansibles_own_path(tmp_path: Path, why: str) -> None:
    if why == "become" and os.geteuid() != 0 and not os.environ.get("CI"):
        pytest.skip("su to root without a password needs root")  # CI runs as root: never skipped
    keyword = {"become": "become: true\n  become_method: ansible.builtin.su",
               "async": "async: 30\n  poll: 1"}[why]
    r = run(tmp_path, f"""\
- name: Probe
  drkittest.t.probe:
  {keyword}
  register: r
- name: Publish it
  ansible.builtin.set_stats:
    data:
      r: "{{{{ r }}}}"
""", why, inprocess=True)
    assert r.ok, r.failure
    assert r.facts["r"]["in_worker"] is False
    assert module_starts(r) >= 1
