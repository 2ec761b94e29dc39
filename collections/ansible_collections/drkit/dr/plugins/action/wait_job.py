"""drkit.dr.wait_job: wait for a task started with `async` and `poll: 0`; return its result.

Issue 19: independent steps run side by side (the payments instances start while the database
is rebuilt; the stack template is validated while the other checks run), and a later task
collects the result. ansible.builtin.async_status costs a module start per poll (0.3 s idle,
2-3 s under load) and `until`/`delay` polls in whole tenths of a second at best; this action
reads the job's result file from the controller's worker every 50 ms when the job ran from the
controller: drkit.dr's async writes it there, as Ansible's async_wrapper would, both for a host
reached with the local connection (the module in-process) and for one reached over SSH (the
module run over the connection from a detached process here; the job says `job_on_controller`).
Any other job (Ansible's own async, on the host) is polled with async_status on that host.

Options: job (the registered result of the async task, required), timeout (seconds, default
300). Returns the job's own result (its keys, `changed`, `failed`, `msg`), so the task that
registers it is read as the step itself would have been; fails when the job failed or did not
finish in time. A job that was skipped is skipped here too.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ansible.plugins.action import ActionBase
from ansible_collections.drkit.dr.plugins.plugin_utils.inprocess import parse_output


def _running(data: dict[str, Any]) -> bool:
    """Still running: the start marker (started 1, finished 0). A finished job's file holds
    the module's own result, which may have a `started` key of its own (a list, say)."""
    return data.get("started") == 1 and not data.get("finished")


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp: Any = None, task_vars: Any = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        _spec, args = self.validate_argument_spec(argument_spec={
            "job": {"type": "dict", "required": True},
            "timeout": {"type": "float", "default": 300.0},
        })
        job, timeout = args["job"], args["timeout"]
        if job.get("skipped"):
            result.update(skipped=True, msg="the job was skipped: %s" % job.get("skip_reason", ""))
            return result
        jid = job.get("ansible_job_id")
        if not jid:
            result.update(failed=True, msg="not an async job's result (no ansible_job_id): "
                          "start the task with `async` and `poll: 0`, and register it")
            return result
        if job.get("job_on_controller") or getattr(self._connection, "transport", "") == "local":
            data = self._wait_here(jid, job.get("results_file"), timeout)
        else:
            data = self._wait_there(jid, timeout, task_vars)
        result.update(data, ansible_job_id=jid)
        return result

    def _async_dir(self) -> str:
        return str(self.get_shell_option("async_dir", default="~/.ansible_async"))

    def _wait_here(self, jid: str, path: str | None, timeout: float) -> dict[str, Any]:
        path = path or os.path.join(os.path.expanduser(self._async_dir()), jid)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with open(path, encoding="utf-8") as f:
                    data = json.load(f)
            except (OSError, ValueError) as e:
                data = {"started": 1, "finished": 0, "error": str(e)}
            if not _running(data):
                break
            if time.monotonic() > deadline:
                return {"failed": True, "msg": "job %s did not finish in %gs" % (jid, timeout)}
            time.sleep(0.05)
        try:
            os.unlink(path)
        except OSError:
            pass
        data.pop("finished", None)
        data.pop("ansible_job_id", None)
        # The module's own result, read as Ansible reads a module's output.
        return parse_output(self, json.dumps(data))

    def _wait_there(self, jid: str, timeout: float, task_vars: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        async_dir = self._remote_expand_user(self._async_dir())
        while True:
            data = self._execute_module(module_name="ansible.legacy.async_status",
                                        module_args={"jid": jid, "_async_dir": async_dir},
                                        task_vars=task_vars)
            if not _running(data) or data.get("failed"):
                break
            if time.monotonic() > deadline:
                return {"failed": True, "msg": "job %s did not finish in %gs" % (jid, timeout)}
            time.sleep(0.25)
        self._execute_module(module_name="ansible.legacy.async_status",
                             module_args={"jid": jid, "mode": "cleanup",
                                          "_async_dir": async_dir}, task_vars=task_vars)
        # Ansible's own markers, not the job's: a module may return keys of those names
        # (drkit.dr.daemons returns `started`, the daemons it started).
        for marker in ("started", "finished"):
            if data.get(marker) in (0, 1, True, False):
                data.pop(marker)
        data.pop("ansible_job_id", None)
        data.pop("results_file", None)
        return dict(data)
