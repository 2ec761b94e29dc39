#!/usr/bin/python
"""drkit.dr.daemon: start, stop, kill or restart a long-running process tracked by a pid file.

Why custom: no shipped module supervises a detached process by pid file with start-time checks
(the lab has no systemd).
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: daemon
short_description: Run a process as a detached daemon tracked by a pid file
description:
  - Starts a program detached from Ansible (new session, stdio to a log file) so that it outlives
    the playbook, and records its pid in O(pidfile) (plus O(pidfile).meta with its start time, so
    a recycled pid is never mistaken for it).
  - A pid that is gone, a zombie (state Z in /proc/PID/stat, since the lab's PID 1 does not reap
    orphans), or that now belongs to another program counts as not running.
  - Idempotent; supports check mode.
options:
  name:
    description: A name for messages and the return value.
    type: str
    required: true
  argv:
    description: Program and arguments. Required for O(state=started) and O(state=restarted).
    type: list
    elements: str
  pidfile:
    description: Where the pid is recorded.
    type: path
    required: true
  log:
    description: File that receives the process's stdout and stderr (appended).
    type: path
  env:
    description: Environment variables added to the inherited environment.
    type: dict
    default: {}
  user:
    description: Run as this user (requires root).
    type: str
  cwd:
    description: Working directory of the process.
    type: path
    default: /
  wait_tcp:
    description: After starting, wait until 127.0.0.1:PORT accepts connections.
    type: int
  wait_http:
    description: After starting, wait until GET of this URL answers 2xx.
    type: str
  timeout:
    description: Seconds to wait for O(wait_tcp)/O(wait_http), and for a process to stop.
    type: float
    default: 30
  state:
    description:
      - V(started) starts it unless it already runs; V(stopped) sends SIGTERM, then SIGKILL after
        O(timeout); V(killed) sends SIGKILL at once (a hard fault, the pid file stays, as after a
        crash); V(restarted) stops then starts.
      - With V(started), a process that already runs is left alone (no change), but the module
        still waits until it answers O(wait_tcp)/O(wait_http).
    type: str
    choices: [started, stopped, killed, restarted]
    default: started
author: drkit maintainers (@drkit)
"""

EXAMPLES = r"""
- name: Start the payments API instance 1 of the primary region
  drkit.dr.daemon:
    name: payments-eu-west-1-1
    argv: ["{{ drkit_python }}", -m, drkit.lab.payments, serve, --region, eu-west-1,
           --instance, "1", --port, "17411", --dsn-file, /var/tmp/drkit-lab/services/eu-west-1.dsn]
    pidfile: /var/tmp/drkit-lab/services/eu-west-1-1.pid
    log: /var/tmp/drkit-lab/services/eu-west-1-1.log
    wait_tcp: 17411

- name: Lose the primary region's API instance 1 (hard fault)
  drkit.dr.daemon:
    name: payments-eu-west-1-1
    pidfile: /var/tmp/drkit-lab/services/eu-west-1-1.pid
    state: killed
"""

RETURN = r"""
pid:
  description: Pid of the running process (after the change), or null when it does not run.
  returned: always
  type: int
previous_pid:
  description: Pid that ran before the change, if any.
  returned: always
  type: int
running:
  description: Whether the process runs after the task.
  returned: always
  type: bool
"""

import signal

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.drkit.dr.plugins.module_utils.daemonutil import (
    DaemonError,
    current_pid,
    forget,
    spawn,
    stop,
    wait_all,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            argv=dict(type="list", elements="str"),
            pidfile=dict(type="path", required=True),
            log=dict(type="path"),
            env=dict(type="dict", default={}),
            user=dict(type="str"),
            cwd=dict(type="path", default="/"),
            wait_tcp=dict(type="int"),
            wait_http=dict(type="str"),
            timeout=dict(type="float", default=30.0),
            state=dict(type="str", default="started",
                       choices=["started", "stopped", "killed", "restarted"]),
        ),
        required_if=[("state", "started", ["argv"]), ("state", "restarted", ["argv"])],
        supports_check_mode=True,
    )
    p = module.params
    state = p["state"]
    pid = current_pid(p["pidfile"], p["argv"])
    result = dict(changed=False, name=p["name"], previous_pid=pid, pid=pid, running=bool(pid))
    try:
        if state in ("stopped", "killed"):
            if pid:
                result.update(changed=True, pid=None, running=False)
            if module.check_mode:
                module.exit_json(**result)
            if state == "killed":
                if pid:
                    # A hard fault: no clean shutdown, and the pid file stays, as after a crash.
                    stop(p["name"], pid, signal.SIGKILL, 5)
            else:
                if pid:
                    stop(p["name"], pid, signal.SIGTERM, p["timeout"])
                forget(p["pidfile"])  # also a stale one (crashed process, zombie)
            module.exit_json(**result)

        # started / restarted
        if state == "started" and pid:
            if not module.check_mode:
                wait_all([(p, pid, None)], p["timeout"])
            module.exit_json(**result)
        result.update(changed=True)
        if module.check_mode:
            module.exit_json(**result)
        if pid:
            stop(p["name"], pid, signal.SIGTERM, p["timeout"])
        spawned = spawn(p)
        result.update(pid=spawned.pid, running=True)
        wait_all([(p, spawned.pid, spawned)], p["timeout"])
    except DaemonError as e:
        module.fail_json(msg=str(e), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
