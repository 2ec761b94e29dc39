#!/usr/bin/python
"""drkit.dr.daemons: start several detached daemons at once, and wait for all of them together.

Why custom: starts many detached daemons and waits for them together, which one daemon task per
loop item cannot do in one round trip.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: daemons
short_description: Start (or stop) several daemons at once, in parallel
description:
  - The batch form of M(drkit.dr.daemon) with O(drkit.dr.daemon#module:state=started)
    semantics; every daemon of O(daemons) that does not run is started (detached, pid file plus
    start time), then the module waits for all of them at once. One task instead of one per
    process, as each Ansible task costs about 0.3 s, and the lab starts a dozen processes.
  - Daemons that already run are left alone but must answer their C(wait_tcp) or
    C(wait_http) within O(timeout).
  - With O(state=stopped), every daemon that runs gets SIGTERM at once, and the module waits
    for all of them (SIGKILL after O(timeout)); pid files are removed. Only C(pidfile) is
    needed then (the name defaults to the pid file's name without .pid).
  - Supports check mode.
options:
  daemons:
    description:
      - The daemons, each a dict with the options of M(drkit.dr.daemon) (name, argv and pidfile
        required; log, env, user, cwd, wait_tcp, wait_http). Other keys are ignored, so the
        lab's C(drkit_lab_services) list can be passed as it is.
    type: list
    elements: dict
    required: true
  timeout:
    description: Seconds to wait for all of them to answer (or to exit).
    type: float
    default: 30
  state:
    description:
      - V(started), V(stopped), or V(killed) (SIGKILL at once, pid files kept, as after a crash).
    type: str
    choices: [started, stopped, killed]
    default: started
author: drkit maintainers (@drkit)
"""

EXAMPLES = r"""
- name: Start the payments API instances
  drkit.dr.daemons:
    daemons:
      - name: payments-eu-west-1-1
        argv: ["{{ drkit_python }}", -m, drkit.lab.payments, serve, --region, eu-west-1,
               --instance, "1", --port, "17411",
               --dsn-file, /var/tmp/drkit-lab/services/eu-west-1.dsn]
        pidfile: /var/tmp/drkit-lab/services/eu-west-1-1.pid
        log: /var/tmp/drkit-lab/services/eu-west-1-1.log
        wait_tcp: 17411
"""

RETURN = r"""
stopped:
  description: Names of the daemons this task stopped.
  returned: always
  type: list
  elements: str
started:
  description: Names of the daemons this task started.
  returned: always
  type: list
  elements: str
pids:
  description: "{name: pid} of every daemon after the task."
  returned: always
  type: dict
"""

import os
import signal
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.drkit.dr.plugins.module_utils.daemonutil import (
    DaemonError,
    current_pid,
    forget,
    spawn,
    wait_all,
)
from ansible_collections.drkit.dr.plugins.module_utils.runtime import wait_dead


def stop_all(module, specs, hard=False):
    """SIGTERM every running daemon at once; wait for all; SIGKILL the ones that linger.

    With `hard` (state=killed), SIGKILL at once and keep the pid files, as after a crash: one
    task loses a whole region's instances, where a loop would spend a task on each.
    """
    running = [(s, current_pid(s["pidfile"])) for s in specs]
    running = [(s, pid) for s, pid in running if pid]
    stopped = [s["name"] for s, _pid in running]
    if module.check_mode:
        module.exit_json(changed=bool(stopped), stopped=stopped, started=[], pids={})
    for _s, pid in running:
        try:
            os.kill(pid, signal.SIGKILL if hard else signal.SIGTERM)
        except ProcessLookupError:
            pass
    if hard:
        for s, pid in running:
            if not wait_dead(pid, 5):
                module.fail_json(msg="%s: pid %d did not exit after SIGKILL" % (s["name"], pid))
        module.exit_json(changed=bool(stopped), stopped=stopped, started=[], pids={})
    deadline = time.monotonic() + module.params["timeout"]
    for s, pid in running:
        if not wait_dead(pid, max(0.0, deadline - time.monotonic())):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if not wait_dead(pid, 5):
                module.fail_json(msg="%s: pid %d did not exit after SIGKILL" % (s["name"], pid))
    for s in specs:
        forget(s["pidfile"])  # stale ones too
    module.exit_json(changed=bool(stopped), stopped=stopped, started=[], pids={})


def normalize(module, raw):
    """Validate one daemon's dict (the suboptions of drkit_daemon; other keys are ignored)."""
    raw = dict(raw)
    if raw.get("pidfile") and not raw.get("name"):
        raw["name"] = os.path.basename(str(raw["pidfile"])).rsplit(".pid", 1)[0]
    for key in ("name", "pidfile") + (("argv",) if module.params["state"] == "started" else ()):
        if not raw.get(key):
            module.fail_json(msg="daemons: every daemon needs %s (got %s)" % (key, sorted(raw)))
    if not isinstance(raw.get("argv") or [], list):
        module.fail_json(msg="daemons: %s: argv must be a list" % raw["name"])
    spec = {
        "name": str(raw["name"]),
        "argv": [str(a) for a in raw.get("argv") or []],
        "pidfile": os.path.expanduser(str(raw["pidfile"])),
        "log": os.path.expanduser(str(raw["log"])) if raw.get("log") else None,
        "env": dict(raw.get("env") or {}),
        "user": raw.get("user"),
        "cwd": raw.get("cwd") or "/",
        "wait_tcp": int(raw["wait_tcp"]) if raw.get("wait_tcp") else None,
        "wait_http": raw.get("wait_http"),
    }
    return spec


def main():
    module = AnsibleModule(
        argument_spec=dict(
            daemons=dict(type="list", elements="dict", required=True),
            timeout=dict(type="float", default=30.0),
            state=dict(type="str", default="started", choices=["started", "stopped", "killed"]),
        ),
        supports_check_mode=True,
    )
    started, pids, waits = [], {}, []
    specs = [normalize(module, d) for d in module.params["daemons"]]
    if module.params["state"] in ("stopped", "killed"):
        stop_all(module, specs, hard=module.params["state"] == "killed")
    try:
        for spec in specs:
            pid = current_pid(spec["pidfile"], spec["argv"])
            if pid:
                pids[spec["name"]] = pid
                waits.append((spec, pid, None))
                continue
            started.append(spec["name"])
            if module.check_mode:
                continue
            spawned = spawn(spec)
            pids[spec["name"]] = spawned.pid
            waits.append((spec, spawned.pid, spawned))
        if not module.check_mode:
            wait_all(waits, module.params["timeout"])
    except DaemonError as e:
        module.fail_json(msg=str(e), started=started, pids=pids)
    module.exit_json(changed=bool(started), started=started, stopped=[], pids=pids)


if __name__ == "__main__":
    main()
