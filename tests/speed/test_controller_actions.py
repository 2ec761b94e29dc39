"""Issue 19: drkit.dr's steps run on the controller, through real ansible-playbook runs."""

from __future__ import annotations

import socket
import subprocess
import textwrap
from datetime import datetime
from pathlib import Path

from drkit import engine

REPO = Path(__file__).resolve().parents[2]
INVENTORY = REPO / "inventories" / "lab" / "hosts.yml"


def run(tmp: Path, tasks: str, name: str = "play", inprocess: bool = True) -> engine.RunResult:
    pb = tmp / f"{name}.yml"
    pb.write_text("- name: Test\n  hosts: localhost\n  gather_facts: false\n  tasks:\n"
                  + textwrap.indent(textwrap.dedent(tasks), "    "))
    # -vvv: ansible-playbook prints an EXEC line for every module it starts on a host.
    return engine.run_playbook(pb, inventory=INVENTORY, content_root=REPO,
                               artifacts_dir=tmp / f"art-{name}",
                               envvars={"ANSIBLE_VERBOSITY": "3",
                                        "DRKIT_INPROCESS": "1" if inprocess else "0"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_module_runs_in_the_worker_and_returns_what_the_module_path_returns(
        tmp_path: Path) -> None:
    port = free_port()
    task = f"""\
    - name: Read a database that is not there
      drkit.dr.pg_info:
        port: {port}
      register: seen
    - name: Publish it
      ansible.builtin.set_stats:
        data:
          seen: "{{{{ seen | dict2items | rejectattr('key', 'eq', 'invocation') | items2dict }}}}"
    """
    here = run(tmp_path, task, "here")
    # A task environment keeps drkit.dr's action off its own in-process path; the module still
    # runs in the worker (plugin_utils/inworker.py, issue 13). DRKIT_INPROCESS=0 gives Ansible's
    # own path (so do SSH, become or async).
    with_env = task.replace("      register: seen",
                            "      environment: {DRKIT_T: '1'}\n      register: seen")
    env = run(tmp_path, with_env, "env")
    there = run(tmp_path, with_env, "there", inprocess=False)
    assert here.ok and env.ok and there.ok, (here.failure, env.failure, there.failure)
    assert here.facts["seen"] == there.facts["seen"] == env.facts["seen"]
    assert here.facts["seen"]["reachable"] is False and here.facts["seen"]["port"] == port
    assert "EXEC" not in here.stdout_path.read_text()
    assert "EXEC" not in env.stdout_path.read_text()
    assert "EXEC" in there.stdout_path.read_text()


def test_a_failing_module_fails_the_same_way_in_the_worker(tmp_path: Path) -> None:
    r = run(tmp_path, f"""\
    - name: Require a database that is not there
      drkit.dr.pg_info:
        port: {free_port()}
        fail_unreachable: true
    """)
    assert not r.ok and r.failure is not None
    assert "cannot connect to PostgreSQL" in r.failure.message
    assert "EXEC" not in r.stdout_path.read_text()


def test_lose_region_kills_and_publishes_when_it_issued_the_fault(tmp_path: Path) -> None:
    victims = [subprocess.Popen(["sleep", "300"]) for _ in range(2)]
    daemons = []
    for i, p in enumerate(victims):
        (tmp_path / f"v{i}.pid").write_text(f"{p.pid}\n")
        daemons.append({"name": f"v{i}", "pidfile": str(tmp_path / f"v{i}.pid")})
    try:
        r = run(tmp_path, f"""\
        - name: Lose the region
          drkit.dr.lose_region:
            daemons: {daemons}
          register: lost
        """)
        assert r.ok, r.failure
        assert [p.wait(timeout=5) for p in victims] == [-9, -9]
        fault = r.facts["drkit_fault"]
        assert fault["instances"] == {f"v{i}": p.pid for i, p in enumerate(victims)}
        issued = datetime.fromisoformat(fault["issued_at"].replace("Z", "+00:00"))
        confirmed = datetime.fromisoformat(fault["confirmed_at"].replace("Z", "+00:00"))
        assert r.tasks[0].started_at <= issued <= confirmed <= r.tasks[0].ended_at
        # Nothing left to lose: the step says so (nothing killed), and the drill's clock then
        # falls back to the phase start (test_fault_clock).
        again = run(tmp_path, f"""\
        - name: Lose the region again
          drkit.dr.lose_region:
            daemons: {daemons}
          register: lost
        """, "again")
        assert again.ok and again.facts["drkit_fault"]["instances"] == {}
        assert again.tasks[0].status == "ok"  # not changed
    finally:
        for p in victims:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_a_job_started_in_the_worker_is_collected_with_the_modules_result(
        tmp_path: Path) -> None:
    """async + poll 0 on the in-process path forks the job (no module start); drkit.dr.wait_job
    returns the module's own result, as the module path's async (async_wrapper) gives it."""
    port = free_port()
    task = f"""\
    - name: Start reading a database that is not there
      drkit.dr.pg_info:
        port: {port}
      async: 60
      poll: 0
      register: job
    - name: Wait for it
      drkit.dr.wait_job:
        job: "{{{{ job }}}}"
      register: seen
    - name: Publish it
      ansible.builtin.set_stats:
        data:
          job: "{{{{ job }}}}"
          seen: "{{{{ seen | dict2items | rejectattr('key', 'in', ['invocation', 'ansible_job_id'])
                  | items2dict }}}}"
    """
    here = run(tmp_path, task, "here")
    there = run(tmp_path, task.replace("      async: 60",
                                       "      environment: {DRKIT_T: '1'}\n      async: 60"),
                "there")
    assert here.ok and there.ok, (here.failure, there.failure)
    assert here.facts["job"]["ansible_job_id"] and not here.facts["job"]["finished"]
    assert here.facts["seen"]["reachable"] is False and here.facts["seen"]["port"] == port
    assert here.facts["seen"] == there.facts["seen"]
    assert "EXEC" not in here.stdout_path.read_text()
    assert "EXEC" in there.stdout_path.read_text()
    # The result file is gone once collected.
    assert not Path(here.facts["job"]["results_file"]).exists()


def test_a_failed_job_fails_the_wait_with_the_modules_message(tmp_path: Path) -> None:
    r = run(tmp_path, f"""\
    - name: Start requiring a database that is not there
      drkit.dr.pg_info:
        port: {free_port()}
        fail_unreachable: true
      async: 60
      poll: 0
      register: job
    - name: Wait for it
      drkit.dr.wait_job:
        job: "{{{{ job }}}}"
    """)
    assert not r.ok and r.failure is not None
    assert r.failure.task == "Wait for it"
    assert "cannot connect to PostgreSQL" in r.failure.message


def test_a_job_whose_result_has_a_started_key_of_its_own_is_finished(tmp_path: Path) -> None:
    """drkit.dr.daemons returns `started` (the daemons it started): not Ansible's marker."""
    pidfile = tmp_path / "sleeper.pid"
    r = run(tmp_path, f"""\
    - name: Start a daemon in the background
      drkit.dr.daemons:
        daemons:
          - name: sleeper
            argv: [sleep, "30"]
            pidfile: {pidfile}
            log: {tmp_path / 'sleeper.log'}
      async: 60
      poll: 0
      register: job
    - name: Wait for it
      drkit.dr.wait_job:
        job: "{{{{ job }}}}"
        timeout: 30
      register: seen
    - name: Publish it
      ansible.builtin.set_stats:
        data:
          seen: "{{{{ seen }}}}"
    """)
    try:
        assert r.ok, r.failure
        assert r.facts["seen"]["started"] == ["sleeper"]
        assert "sleeper" in r.facts["seen"]["pids"]
    finally:
        import os
        import signal

        if pidfile.exists():
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)


REMOTE_CONNECTION = '''\
"""The local connection under another name: drkit.dr's actions then take the path of a host
reached over SSH (a module run over the connection, not in the worker)."""

from __future__ import annotations

from ansible.plugins.connection.local import Connection as Local

DOCUMENTATION = """
    name: remote_like
    short_description: the local connection, not named local (a test's stand-in for ssh)
    description: [Runs on the controller like local.]
    author: drkit maintainers (@drkit)
    options:
        become_success_timeout:
            type: int
            default: 10
            description: [As local's.]
        become_strip_preamble:
            type: bool
            default: true
            description: [As local's.]
    extends_documentation_fragment:
        - connection_pipelining
"""


class Connection(Local):
    transport = "remote_like"
'''


def test_a_job_on_a_host_over_another_connection_runs_from_the_controller(
        tmp_path: Path) -> None:
    """async + poll 0 on a host reached over SSH (here a stand-in connection): the module runs
    over the connection from a detached process on the controller, no async_wrapper; the job
    is collected here and gives the module's own result, a failure with its message."""
    (tmp_path / "connection_plugins").mkdir()
    (tmp_path / "connection_plugins" / "remote_like.py").write_text(REMOTE_CONNECTION)
    port = free_port()
    task = f"""\
    - name: Start reading a database that is not there
      drkit.dr.pg_info:
        port: {port}
      vars:
        ansible_connection: remote_like
        ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
      async: 60
      poll: 0
      register: job
    - name: Start requiring it
      drkit.dr.pg_info:
        port: {port}
        fail_unreachable: true
      vars:
        ansible_connection: remote_like
        ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
      async: 60
      poll: 0
      register: failing
    - name: Wait for it
      drkit.dr.wait_job:
        job: "{{{{ job }}}}"
      vars:
        ansible_connection: remote_like
      register: seen
    - name: Publish it
      ansible.builtin.set_stats:
        data:
          job: "{{{{ job }}}}"
          seen: "{{{{ seen | dict2items | rejectattr('key', 'in', ['invocation', 'ansible_job_id'])
                  | items2dict }}}}"
    - name: Wait for the failing one
      drkit.dr.wait_job:
        job: "{{{{ failing }}}}"
      vars:
        ansible_connection: remote_like
    """
    r = run(tmp_path, task)
    assert r.failure is not None and r.failure.task == "Wait for the failing one", r.failure
    assert "cannot connect to PostgreSQL" in r.failure.message
    job = r.facts["job"]
    assert job["job_on_controller"] is True and not job["finished"]
    assert r.facts["seen"]["reachable"] is False and r.facts["seen"]["port"] == port
    assert not Path(job["results_file"]).exists()
    out = r.stdout_path.read_text()
    # Neither Ansible's async (async_wrapper copied over) nor async_status polls ran.
    assert "async_wrapper" not in out and "async_status" not in out
