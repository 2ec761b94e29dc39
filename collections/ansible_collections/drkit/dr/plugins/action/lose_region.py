"""drkit.dr.lose_region: lose a region of the lab at once, and say when it happened.

The fault step of a drill (issue 19: the clock measures the outage, not drkit). On the
controller, in one step: the region's database is crashed (`pg_ctl stop -m immediate`, no
checkpoint) and its payments instances are killed (SIGKILL), side by side; then the step waits
until the postmaster and every instance are gone. It records `issued_at`, taken just before the
first of them is sent (the fault cannot have taken effect earlier, so a clock started there
never starts after the outage did), and `confirmed_at`, when every process was seen gone, and
publishes both as the custom stat `drkit_fault` (what set_stats would do), which the drill
reads as its clock's start and records with its source in the evidence.

Processes are told by pid (pid files), not by network, so this works the same when a region
lives in its own network namespace (issue 17).

Options: database (dict: pgdata, os_user [postgres], bin_dir [/usr/lib/postgresql/15/bin];
optional), daemons (list of dicts with name and pidfile, as drkit_lab_services; optional),
timeout (seconds to wait for the processes to be gone, default 10).

Returns changed, `fault` ({issued_at, confirmed_at, database_pid, instances: {name: pid}},
times in UTC ISO 8601), and down (true when everything was seen gone). Fails when a process
outlives the timeout. In check mode nothing is done and nothing is published.
"""

from __future__ import annotations

import os
import signal
import threading
from datetime import UTC, datetime
from typing import Any

from ansible.plugins.action import ActionBase
from ansible_collections.drkit.dr.plugins.module_utils.daemonutil import current_pid
from ansible_collections.drkit.dr.plugins.module_utils.pgutil import (
    PgError,
    postmaster_pid,
    run_as,
)
from ansible_collections.drkit.dr.plugins.module_utils.runtime import wait_dead


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: Any = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        _spec, args = self.validate_argument_spec(argument_spec={
            "database": {"type": "dict", "options": {
                "pgdata": {"type": "path", "required": True},
                "os_user": {"type": "str", "default": "postgres"},
                "bin_dir": {"type": "path", "default": "/usr/lib/postgresql/15/bin"},
            }},
            "daemons": {"type": "list", "elements": "dict", "default": []},
            "timeout": {"type": "float", "default": 10.0},
        })
        db = args["database"]
        db_pid = postmaster_pid(db["pgdata"]) if db else None
        instances = {}
        for d in args["daemons"]:
            if not d.get("pidfile"):
                result.update(failed=True, msg="daemons: every daemon needs a pidfile")
                return result
            pid = current_pid(os.path.expanduser(str(d["pidfile"])))
            if pid:
                instances[str(d.get("name") or d["pidfile"])] = pid
        if self._task.check_mode:
            result.update(changed=bool(db_pid or instances), down=None)
            return result
        errors: list[str] = []

        def crash() -> None:
            argv = [os.path.join(db["bin_dir"], "pg_ctl"), "stop", "-D", db["pgdata"], "-m",
                    "immediate", "-w", "-t", str(int(args["timeout"]))]
            try:
                res = run_as(db["os_user"], argv, timeout=args["timeout"] + 5)
            except PgError as e:
                errors.append(str(e))
                return
            if res.returncode != 0 and postmaster_pid(db["pgdata"]) is not None:
                errors.append("pg_ctl stop -m immediate failed (exit %d): %s" % (
                    res.returncode, res.stdout.decode("utf-8", "replace").strip()[-300:]))

        issued_at = _now()
        worker = threading.Thread(target=crash) if db_pid else None
        if worker is not None:
            worker.start()
        for pid in instances.values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if worker is not None:
            worker.join()
        alive = [name for name, pid in instances.items() if not wait_dead(pid, args["timeout"])]
        if db_pid and not wait_dead(db_pid, args["timeout"]):
            alive.append("postmaster %d (%s)" % (db_pid, db["pgdata"]))
        confirmed_at = _now()
        fault = {"issued_at": issued_at, "confirmed_at": confirmed_at, "database_pid": db_pid,
                 "instances": instances}
        result.update(changed=bool(db_pid or instances), fault=fault, down=not alive)
        if alive or errors:
            result.update(failed=True, msg="the region is not lost: %s" % "; ".join(
                errors + ["still running: %s" % ", ".join(alive)] if alive else errors))
            return result
        # The custom stat set_stats would publish, from the step that caused the fault.
        result["ansible_stats"] = {"data": {"drkit_fault": fault}, "per_host": False,
                                   "aggregate": False}
        return result
