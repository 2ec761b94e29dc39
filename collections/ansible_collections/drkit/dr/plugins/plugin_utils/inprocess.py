"""Run one of drkit.dr's modules inside the controller's worker process (issue 19).

A module task costs a fresh Python interpreter that imports Ansible's module machinery before
the module does anything: about 0.3 s on an idle 2-core machine, 2-3 s under load, and on the
recovery clock every task after the fault counts. When the task's host is reached with the
local connection (the lab's hosts in its local topology, localhost everywhere) the worker that
runs the task is already a Python process with Ansible imported, on that same machine, as the
same user: the module runs there, as AnsiballZ would run it (the same arguments, internal
arguments included, the same result parsing), without the round trip.

Anything else takes the ordinary path, unchanged: another connection (SSH to a region's host in
the namespaces topology, issue 17), become, or a task with its own `environment` (which then
still runs in the worker through inworker.py, issue 13, as any other module does), or
DRKIT_INPROCESS=0 (plain Ansible behaviour, see inworker.py).

`async` with `poll: 0` (independent steps side by side, issue 19): on the in-process path the
worker forks a detached process that runs the module the same way and writes its result where
Ansible's async_wrapper would (`<async_dir>/<jid>`, the same JSON), so `drkit.dr.wait_job` (or
ansible.builtin.async_status) reads it. A host reached over another connection (SSH to a
region's host, the namespaces topology) gets the same detached process on the controller, which
runs the module there the ordinary way (one module run over the connection, pipelined) and
writes its result here: Ansible's own async would copy async_wrapper and the module over
(several round trips, 1.3 s), and every poll of async_status is one more module run over SSH.
The job's result is then on the controller either way (`job_on_controller`), and
drkit.dr.wait_job reads it here. A local connection with become or a task environment keeps
Ansible's own async.
An action plugin file named like a module makes Ansible run it for that module's tasks; each
such file in ../action imports ActionModule from here.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any, Callable

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible_collections.drkit.dr.plugins.plugin_utils.inworker import enabled, run_here

_PRELOADED = False


def preload() -> None:
    """_preload once per process (at this module's import, or from drkit.dr.warmup)."""
    global _PRELOADED
    if not _PRELOADED:
        _PRELOADED = True
        _preload()


def _preload() -> None:
    """Import what the steps on the recovery path use, here, at import time: the linear
    strategy loads an action plugin's class in ansible-playbook's own process before it forks
    the task's worker, so from then on every worker starts with these already imported instead
    of importing them again (psycopg and libpq for every database step, boto3 for every AWS
    call, drkit.flows for the smoke flows: tenths of a second each per task under load)."""
    import importlib

    for name in ("psycopg", "psycopg.rows", "boto3", "drkit.flows",
                 "ansible.module_utils.basic", "ansible.module_utils._internal._ansiballz._loader",
                 "ansible_collections.drkit.dr.plugins.module_utils.pgutil",
                 "ansible_collections.drkit.dr.plugins.module_utils.daemonutil",
                 "ansible_collections.drkit.dr.plugins.module_utils.runtime"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # a module that needs it says so when it runs
    # The service models boto3 reads for every new client (large JSON files), loaded once into
    # the default session's loader: no client and no credentials are made here.
    try:
        import boto3

        boto3.setup_default_session()
        for service in ("cloudformation", "route53"):
            boto3.DEFAULT_SESSION._session.get_service_model(service)
    except Exception:  # noqa: BLE001 - only a warm-up: each task still makes its own client
        pass


preload()

PROFILE = "legacy"  # drkit.dr's modules declare no other serialization profile


def write_result(path: str, data: dict[str, Any]) -> None:
    """An async job's result file, written atomically (a reader never sees half of it)."""
    tmp = "%s.%d.tmp" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.rename(tmp, path)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_async = True

    def run(self, tmp: Any = None, task_vars: Any = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        del tmp
        name = self._task.resolved_action or self._task.action
        args, task_vars = dict(self._task.args), task_vars or {}
        if not self._in_process():
            if self._task.async_val and not self._task.poll and self._remote():
                # The module runs over the connection, from a detached process here.
                result.update(self._start_here(lambda: self._output_there(name, args, task_vars)))
                return result
            result.update(self._execute_module(module_name=name, task_vars=task_vars,
                                               wrap_async=self._task.async_val))
            return result
        if self._task.async_val:
            result.update(self._start_here(lambda: self._module_output(name, args, task_vars)))
            return result
        result.update(self._run_here(name, args, task_vars))
        return result

    def _in_process(self) -> bool:
        # async with polling (a time limit on a task) keeps Ansible's own async.
        return (enabled() and getattr(self._connection, "transport", "") == "local"
                and not (self._task.async_val and self._task.poll)
                and not self._play_context.become
                and not any(self._task.environment or ()))

    def _remote(self) -> bool:
        # Not the local connection (where become or an environment keeps Ansible's own async).
        return getattr(self._connection, "transport", "") not in ("", "local")

    def _start_here(self, output: Callable[[], str]) -> dict:
        """Run output() (the module's printed result) in a detached process (double fork, its
        own session: it outlives this worker, and drkit's engine shim, the subreaper, still
        stops it with the run) and return at once, as Ansible's async start does."""
        async_dir = os.path.expanduser(self.get_shell_option("async_dir",
                                                             default="~/.ansible_async"))
        os.makedirs(async_dir, mode=0o700, exist_ok=True)
        jid = "%d.%d" % (random.randint(0, 999999999999), os.getpid())
        path = os.path.join(async_dir, jid)
        write_result(path, {"started": 1, "finished": 0, "ansible_job_id": jid})
        first = os.fork()
        if first == 0:  # intermediate: never returns into Ansible's worker
            try:
                os.setsid()
                if os.fork() == 0:  # the job
                    try:
                        null = os.open(os.devnull, os.O_RDWR)
                        for fd in (0, 1, 2):
                            os.dup2(null, fd)
                        # What a connection plugin displays goes to /dev/null, not into the
                        # worker's queue to ansible-playbook (which may be gone by then).
                        Display()._final_q = None
                        # The module's own JSON, as async_wrapper writes it (the reader
                        # parses it as a module's output), plus the finished marker.
                        try:
                            data = json.loads(output())
                            if not isinstance(data, dict):
                                raise ValueError("not an object")
                        except BaseException as e:  # noqa: BLE001 - reported in the result
                            data = {"failed": True, "msg": "the module gave no result: "
                                    "%s: %s" % (type(e).__name__, e)}
                        data.update(ansible_job_id=jid, finished=1)
                        write_result(path, data)
                    finally:
                        os._exit(0)
            finally:
                os._exit(0)
        os.waitpid(first, 0)
        return {"started": 1, "finished": 0, "ansible_job_id": jid, "results_file": path,
                "job_on_controller": True, "changed": False}

    def _output_there(self, name: str, args: dict[str, Any], task_vars: dict[str, Any]) -> str:
        """What the module prints (its JSON result), run over the task's connection the ordinary
        way: the printed JSON itself, as async_wrapper keeps it; when it printed none, Ansible's
        own account of the failure (its message, the module's stdout and stderr)."""
        from ansible.module_utils.json_utils import _filter_non_json_lines

        seen: dict[str, Any] = {}
        parse = self._parse_returned_data

        def keep(res: dict[str, Any], profile: str) -> dict[str, Any]:
            seen.update(res)
            return parse(res, profile)

        self._parse_returned_data = keep  # type: ignore[method-assign]
        data = self._execute_module(module_name=name, module_args=args, task_vars=task_vars)
        try:
            printed = _filter_non_json_lines(seen.get("stdout") or "")[0]
            if isinstance(json.loads(printed), dict):
                return printed
        except ValueError:
            pass
        return json.dumps({"failed": True, "msg": str(data.get("msg") or "MODULE FAILURE"),
                           "rc": seen.get("rc"), "module_stdout": str(seen.get("stdout") or ""),
                           "module_stderr": str(seen.get("stderr") or "")})

    def _run_here(self, name: str, args: dict[str, Any], task_vars: dict[str, Any]) -> dict:
        return parse_output(self, self._module_output(name, args, task_vars))

    def _module_output(self, name: str, args: dict[str, Any], task_vars: dict[str, Any]) -> str:
        """What the module prints (its JSON result), run here (inworker.run_here: as AnsiballZ
        runs it, with what the run changes in this process put back afterwards)."""
        from ansible.module_utils.common.json import Direction, get_module_encoder

        profile = PROFILE
        self._update_module_args(name, args, task_vars)
        params = json.dumps({"ANSIBLE_MODULE_ARGS": args},
                            cls=get_module_encoder(profile, Direction.CONTROLLER_TO_MODULE))
        fqn = "ansible_collections.%s.plugins.modules.%s" % tuple(name.rsplit(".", 1))
        # The printed result says whether it failed; the exit code adds nothing.
        return run_here(fqn, params.encode(), profile, cwd=self._loader.get_basedir())[1]


def parse_output(action: ActionBase, stdout: str) -> dict[str, Any]:
    """A module's printed result as a task's result, the way Ansible reads a module's."""
    from ansible.vars.clean import remove_internal_keys

    data: dict[str, Any] = action._parse_returned_data(
        {"rc": 0, "stdout": stdout, "stderr": ""}, PROFILE)
    data.pop("_ansible_suppress_tmpdir_delete", None)
    remove_internal_keys(data)
    return data
