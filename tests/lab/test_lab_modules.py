"""The lab's custom modules, driven by real playbooks against the real lab.

These are the interfaces the drill and runbook playbooks use: drkit_haproxy, drkit_pg_info,
drkit_pg, drkit_daemon. Each test leaves the lab as it found it (the `lab` fixture repairs it
otherwise).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LabHandle

pytestmark = pytest.mark.lab


def _play(tmp_path: Path, tasks: str) -> Path:
    """A one-play playbook around `tasks` (YAML, indented for a task list)."""
    path = tmp_path / "play.yml"
    path.write_text(
        "---\n- name: Exercise drkit's modules\n  hosts: localhost\n  gather_facts: false\n"
        "  tasks:\n" + tasks)
    return path


def _run(lab: LabHandle, playbook: Path, **kw: Any) -> Any:
    result = lab.run(playbook, **kw)
    assert result.ok, result.failure
    return result


def _statuses(result: Any) -> dict[str, str]:
    return {t.task: t.status for t in result.tasks}


def test_drkit_haproxy_moves_traffic_idempotently_and_keeps_the_map_file(
        lab: LabHandle, tmp_path: Path) -> None:
    map_file = lab.state_dir / "haproxy" / "active.map"
    pb = _play(tmp_path, f"""
    - name: Send traffic to the secondary region
      drkit.dr.haproxy:
        socket: "{{{{ drkit_lab_haproxy_socket }}}}"
        map_file: "{{{{ drkit_lab_haproxy_map }}}}"
        key: active
        value: "{lab.secondary_region}"
      register: first
    - name: Send traffic to the secondary region again
      drkit.dr.haproxy:
        socket: "{{{{ drkit_lab_haproxy_socket }}}}"
        map_file: "{{{{ drkit_lab_haproxy_map }}}}"
        key: active
        value: "{lab.secondary_region}"
      register: second
    - name: Read the map and the servers
      drkit.dr.haproxy:
        socket: "{{{{ drkit_lab_haproxy_socket }}}}"
        map_file: "{{{{ drkit_lab_haproxy_map }}}}"
      register: now
    - name: Check what the module reported
      ansible.builtin.assert:
        that:
          - first is changed
          - first.previous == "{lab.primary_region}"
          - second is not changed
          - now.map.active == "{lab.secondary_region}"
          - now.servers["be_{lab.primary_region}"] | length == {lab.config.instances}
""")
    try:
        result = _run(lab, pb)
        assert _statuses(result)["Send traffic to the secondary region"] == "changed"
        assert _statuses(result)["Send traffic to the secondary region again"] == "ok"
        assert map_file.read_text() == f"active {lab.secondary_region}\n"
        assert lab.status().active_region == lab.secondary_region
    finally:
        back = _play(tmp_path, f"""
    - name: Send traffic back to the primary region
      drkit.dr.haproxy:
        socket: "{{{{ drkit_lab_haproxy_socket }}}}"
        map_file: "{{{{ drkit_lab_haproxy_map }}}}"
        key: active
        value: "{lab.primary_region}"
""")
        _run(lab, back)
    assert map_file.read_text() == f"active {lab.primary_region}\n"
    assert lab.status().active_region == lab.primary_region


def test_drkit_haproxy_drains_a_server_and_check_mode_changes_nothing(
        lab: LabHandle, tmp_path: Path) -> None:
    server = f"{lab.primary_region}-1"
    drain = _play(tmp_path, f"""
    - name: Drain one server
      drkit.dr.haproxy:
        socket: "{{{{ drkit_lab_haproxy_socket }}}}"
        backend: be_{lab.primary_region}
        server: {server}
        server_state: drain
      register: drained
    - name: Check it
      ansible.builtin.assert:
        that:
          - drained is changed
          - drained.servers["be_{lab.primary_region}"]["{server}"].admin == "drain"
""")
    ready = drain.parent / "ready.yml"
    ready.write_text(drain.read_text().replace("state: drain", "state: ready")
                     .replace("admin == \"drain\"", "admin == \"ready\""))
    checked = _run(lab, drain, check=True)
    assert _statuses(checked)["Drain one server"] == "changed"
    from drkit.lab._runtime import runtime

    sock = str(lab.state_dir / "haproxy" / "admin.sock")
    be = f"be_{lab.primary_region}"
    assert runtime.haproxy_servers(sock)[be][server]["admin"] == "ready"  # check mode: untouched
    try:
        _run(lab, drain)
        assert runtime.haproxy_servers(sock)[be][server]["admin"] == "drain"
    finally:
        _run(lab, ready)
    assert runtime.haproxy_servers(sock)[be][server]["admin"] == "ready"


def test_drkit_pg_info_reports_streaming_replication(lab: LabHandle, tmp_path: Path) -> None:
    pb = _play(tmp_path, f"""
    - name: Read the primary
      drkit.dr.pg_info:
        port: "{{{{ drkit_lab_ports.pg_primary }}}}"
      register: primary
    - name: Read the standby
      drkit.dr.pg_info:
        port: "{{{{ drkit_lab_ports.pg_secondary }}}}"
      register: standby
    - name: Check them
      ansible.builtin.assert:
        that:
          - primary.reachable and not primary.in_recovery
          - primary.replication | length == 1
          - primary.replication[0].application_name == "{lab.secondary_region}"
          - primary.replication[0].state == "streaming"
          - primary.replication[0].sync_state == ("sync" if drkit_lab_replication == "sync"
                                                   else "async")
          - standby.reachable and standby.in_recovery
          - standby.standby.receiver_status == "streaming"
          - standby.standby.sender_port == drkit_lab_ports.pg_primary
          - standby.standby.lag_s is number
""")
    result = _run(lab, pb, check=True)  # read-only: check mode runs it for real
    assert {t.status for t in result.tasks} == {"ok"}


def test_drkit_pg_standby_is_idempotent_and_promotion_is_previewed_in_check_mode(
        lab: LabHandle, tmp_path: Path) -> None:
    pb = _play(tmp_path, f"""
    - name: Keep the secondary a standby of the primary
      drkit.dr.pg:
        pgdata: "{{{{ drkit_lab_pg.secondary.pgdata }}}}"
        port: "{{{{ drkit_lab_pg.secondary.port }}}}"
        os_user: "{{{{ drkit_lab_os_user }}}}"
        options: "{{{{ drkit_lab_pg_options }}}}"
        primary_port: "{{{{ drkit_lab_pg.primary.port }}}}"
        application_name: "{lab.secondary_region}"
        state: standby
      register: standby
    - name: Preview the promotion of the standby
      drkit.dr.pg:
        pgdata: "{{{{ drkit_lab_pg.secondary.pgdata }}}}"
        port: "{{{{ drkit_lab_pg.secondary.port }}}}"
        options: "{{{{ drkit_lab_pg_options }}}}"
        state: promoted
      check_mode: true
      register: preview
    - name: Check them
      ansible.builtin.assert:
        that:
          - standby is not changed
          - standby.in_recovery
          - preview is changed
          - preview.actions == ["promote"]
          - preview.in_recovery
""")
    _run(lab, pb)
    with lab.pg("secondary") as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)


def test_drkit_daemon_kill_is_a_hard_fault_and_started_brings_it_back(
        lab: LabHandle, tmp_path: Path) -> None:
    from drkit.lab._runtime import runtime

    before = lab.status().component(f"payments-{lab.primary_region}-2")
    assert before is not None and before.pid
    pb = _play(tmp_path, f"""
    - name: Kill instance 2 of the primary region
      drkit.dr.daemon:
        name: "{{{{ svc.name }}}}"
        pidfile: "{{{{ svc.pidfile }}}}"
        state: killed
      register: killed
    - name: Kill it again
      drkit.dr.daemon:
        name: "{{{{ svc.name }}}}"
        pidfile: "{{{{ svc.pidfile }}}}"
        state: killed
      register: killed_again
    - name: Start it
      drkit.dr.daemon:
        name: "{{{{ svc.name }}}}"
        argv: "{{{{ svc.argv }}}}"
        pidfile: "{{{{ svc.pidfile }}}}"
        log: "{{{{ svc.log }}}}"
        wait_http: "http://127.0.0.1:{{{{ svc.port }}}}/healthz"
      register: started
    - name: Start it again
      drkit.dr.daemon:
        name: "{{{{ svc.name }}}}"
        argv: "{{{{ svc.argv }}}}"
        pidfile: "{{{{ svc.pidfile }}}}"
        wait_tcp: "{{{{ svc.port }}}}"
      register: started_again
    - name: Check them
      ansible.builtin.assert:
        that:
          - killed is changed and killed.previous_pid == {before.pid}
          - killed_again is not changed
          - started is changed and started.pid != {before.pid}
          - started_again is not changed and started_again.pid == started.pid
""")
    pb.write_text(pb.read_text().replace(
        "  tasks:\n",
        "  vars:\n    svc: \"{{ drkit_lab_services | selectattr('server', 'eq', '"
        f"{lab.primary_region}-2') | first }}}}\"\n  tasks:\n"))
    _run(lab, pb)
    assert not runtime.pid_alive(before.pid)  # gone or a zombie: either way not running
    after = lab.status().component(f"payments-{lab.primary_region}-2")
    assert after is not None and after.healthy and after.pid != before.pid
