"""Run every Python module of a local-connection task inside Ansible's worker (issue 13).

Each module run on the local connection costs a fresh interpreter that imports Ansible's module
machinery before the module does anything (ansible.builtin.command about 0.28 CPU-s on an idle
machine, an amazon.aws module about 0.5 CPU-s with boto3's import): the worker that runs the
task is already a Python process with all of that imported (drkit.dr.warmup preloads boto3),
on the same machine, as the same user. install() (called by drkit.dr.warmup as ansible-playbook
starts, before it forks any worker) wraps ActionBase._execute_module, the one place every action
(copy, stat, command, file, the `normal` action, collections' actions) runs a module through:
Ansible's own code still resolves the module, builds its arguments (internal ones included:
check mode, diff, no_log), computes the task's environment and parses the result; only the
module's start (the pipelined interpreter fed with the AnsiballZ payload) is replaced by a run
of the same module here, its printed result captured as the child's stdout would be.

It applies only when all of these hold, else Ansible's own path runs unchanged: the local
connection, pipelining on (drkit's ansible.cfg), no become, no async, a new-style (AnsiballZ)
Python module from ansible-core (ansible.modules) or a collection's plugins/modules (not a
legacy library file, binary or PowerShell), and the task's interpreter is this very one (the
same venv's python: anything else could see other packages).

What a module run changes in the process, and a fresh interpreter would forget, is put back
after each run (loop items share one worker): the environment (the task's `environment:` is
applied for the run), the working directory, umask and locale, the module arguments and the
warnings/deprecations basic.py keeps in globals, and module-side mode (Ansible's controller
flag routes warnings to the display instead of the result). What the module registered with
atexit (its temporary directory) runs when it ends, as at the interpreter's exit.

Off switch: DRKIT_INPROCESS=0 in ansible-playbook's environment gives plain Ansible behaviour
(every module in its own interpreter, drkit.dr's own modules included).
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import locale
import os
import sys
from typing import Any

from ansible.plugins.action import ActionBase

_ORIGINAL = ActionBase._execute_module


def enabled() -> bool:
    """False when the user asked for plain Ansible behaviour (DRKIT_INPROCESS=0)."""
    return os.environ.get("DRKIT_INPROCESS", "1").strip().lower() not in ("0", "false", "no", "off")


def install() -> None:
    """Wrap ActionBase._execute_module once per process (before workers fork, so all inherit)."""
    if ActionBase._execute_module is _ORIGINAL:
        ActionBase._execute_module = _execute_module  # type: ignore[method-assign]


def run_here(fqn: str, json_params: bytes, profile: str,
             environment: dict[str, Any] | None = None,
             cwd: str | None = None) -> tuple[int, str, str]:
    """Run module `fqn` in this process as AnsiballZ runs it in a fresh one: (rc, stdout, stderr),
    in folder `cwd` (the local connection starts a module in the task's basedir).

    A module prints its result and exits; one that raises is reported as AnsiballZ reports it
    (_loader._handle_exception prints the error, exits 1)."""
    from ansible.module_utils import _internal, basic
    from ansible.module_utils._internal import _traceback
    from ansible.module_utils._internal._ansiballz import _loader
    from ansible.module_utils.common import warnings

    saved_env, saved_cwd, mask = dict(os.environ), os.getcwd(), os.umask(0o022)
    os.umask(mask)
    saved_locale = locale.setlocale(locale.LC_ALL)
    saved_mode = (_internal.is_controller, _traceback._is_traceback_enabled)
    exits: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = []
    register = atexit.register

    def fresh() -> None:
        # A fresh interpreter starts with none of these: nothing of one run is read by the next.
        basic._ANSIBLE_ARGS = basic._ANSIBLE_PROFILE = basic._PARSED_MODULE_ARGS = None
        warnings._global_warnings.clear()
        warnings._global_deprecations.clear()
        _traceback._module_tracebacks_enabled_events = None

    def at_exit(func: Any, *args: Any, **kwargs: Any) -> Any:
        exits.append((func, args, kwargs))
        return func

    out, err, rc = io.StringIO(), io.StringIO(), 0
    fresh()
    try:
        os.environ.update({str(k): str(v) for k, v in (environment or {}).items()})
        if cwd:
            os.chdir(cwd)
        # Module side, as under AnsiballZ: warnings go into the result, tracebacks follow the
        # module's _ansible_tracebacks_for argument.
        _internal.is_controller = False
        _traceback._is_traceback_enabled = _traceback._is_module_traceback_enabled
        atexit.register = at_exit  # type: ignore[assignment]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                _loader.run_module(json_params=json_params, profile=profile, module_fqn=fqn,
                                   modlib_path="", extensions={})
            except SystemExit as e:
                if e.code is None or isinstance(e.code, int):
                    rc = e.code or 0
                else:
                    print(e.code, file=sys.stderr)
                    rc = 1
            finally:
                atexit.register = register  # type: ignore[assignment]
                for func, args, kwargs in reversed(exits):
                    with contextlib.suppress(Exception):
                        func(*args, **kwargs)
    finally:
        _internal.is_controller, _traceback._is_traceback_enabled = saved_mode
        fresh()
        os.chdir(saved_cwd)
        os.umask(mask)
        with contextlib.suppress(locale.Error):
            locale.setlocale(locale.LC_ALL, saved_locale)
        os.environ.clear()
        os.environ.update(saved_env)
    return rc, out.getvalue(), err.getvalue()


def _module_fqn(path: str) -> str | None:
    """The importable name of a module file from ansible-core or a collection, else None."""
    import ansible

    path = os.path.realpath(path)
    if not path.endswith(".py"):
        return None
    core = os.path.join(os.path.dirname(os.path.realpath(ansible.__file__)), "modules") + os.sep
    if path.startswith(core) and os.sep not in path[len(core):]:
        return "ansible.modules." + os.path.basename(path)[:-3]
    parts = path[:-3].split(os.sep)
    # .../ansible_collections/<namespace>/<name>/plugins/modules/<module>.py
    if len(parts) > 6 and parts[-6] == "ansible_collections" and parts[-3:-1] == [
            "plugins", "modules"]:
        return ".".join(parts[-6:])
    return None


def _this_interpreter(shebang: str | None) -> bool:
    """The module would run under this process's own interpreter (same file, same venv)."""
    if not shebang or not shebang.startswith("#!"):
        return False
    words = shebang[2:].split()
    if len(words) != 1:
        return False
    exe = os.path.abspath(words[0])
    here = os.path.abspath(sys.executable)
    return (os.path.dirname(exe) == os.path.dirname(here)
            and os.path.realpath(exe) == os.path.realpath(here))


def _worth_trying(action: ActionBase, wrap_async: bool) -> bool:
    return (enabled()
            and getattr(action._connection, "transport", "") == "local"
            and not wrap_async and not action._task.async_val
            and not action._play_context.become
            and action._connection.is_pipelining_enabled(False))


def _execute_module(self: ActionBase, module_name: Any = None, module_args: Any = None,
                    tmp: Any = None, task_vars: Any = None, persist_files: bool = False,
                    delete_remote_tmp: Any = None, wrap_async: bool = False,
                    ignore_unknown_opts: bool = False) -> dict[str, Any]:
    args = (module_name, module_args, tmp, task_vars, persist_files, delete_remote_tmp,
            wrap_async, ignore_unknown_opts)
    if not _worth_trying(self, wrap_async):
        return _ORIGINAL(self, *args)  # type: ignore[no-any-return]
    # Ansible's own _execute_module, with two of its steps watched: the module it configured
    # (style, interpreter, profile, file) and the pipelined start of that module, which runs
    # here instead when the module qualifies. Every other step (a tmp dir, a transfer) is its own.
    built: dict[str, Any] = {}
    configure, execute = self._configure_module, self._low_level_execute_command

    def watch_configure(*a: Any, **kw: Any) -> Any:
        module_bits, module_path = configure(*a, **kw)
        # module_args as _update_module_args left them: what the payload carries.
        built.update(bits=module_bits, path=module_path,
                     args=kw["module_args"] if "module_args" in kw else a[1])
        return module_bits, module_path

    def run_or_execute(cmd: Any, sudoable: bool = True, in_data: Any = None,
                       *a: Any, **kw: Any) -> dict[str, Any]:
        bits = built.get("bits")
        fqn = _module_fqn(built.get("path") or "") if bits is not None else None
        if (bits is None or in_data is None or in_data is not bits.b_module_data
                or bits.module_style != "new" or fqn is None
                or not _this_interpreter(bits.shebang)):
            return execute(cmd, sudoable, in_data, *a, **kw)  # type: ignore[no-any-return]
        from ansible.module_utils.common.json import Direction, get_module_encoder

        params = json.dumps({"ANSIBLE_MODULE_ARGS": built["args"]},
                            cls=get_module_encoder(bits.serialization_profile,
                                                   Direction.CONTROLLER_TO_MODULE))
        environment: dict[str, Any] = {}
        self._compute_environment_string(environment)
        rc, out, err = run_here(fqn, params.encode(), bits.serialization_profile, environment,
                                self._loader.get_basedir())
        return {"rc": rc, "stdout": out, "stdout_lines": out.splitlines(),
                "stderr": err, "stderr_lines": err.splitlines()}

    self._configure_module = watch_configure  # type: ignore[method-assign]
    self._low_level_execute_command = run_or_execute  # type: ignore[method-assign]
    try:
        return _ORIGINAL(self, *args)  # type: ignore[no-any-return]
    finally:
        del self._configure_module, self._low_level_execute_command
