"""drkit.dr.warmup: import what drkit.dr's steps use when ansible-playbook starts (issue 19).

plugins/plugin_utils/inprocess.py imports psycopg, boto3 (and its service models) and drkit.flows
into ansible-playbook's own process so that every worker it forks afterwards starts with them.
Without this callback that happens when the first drkit.dr step of a run is loaded, in the
middle of the run's first phase (preflight, failback): 0.3 s on an idle 2-core machine, 1 s and
more under load, on top of the phase's own work. Callbacks load before the first play starts,
so the imports happen with the rest of Ansible's start-up instead. Enabled in ansible.cfg
(callbacks_enabled); it reports nothing.

It also installs plugin_utils/inworker.py (issue 13): every Python module of a local-connection
task (ansible.builtin, amazon.aws, community.*, drkit.dr) then runs inside the task's worker
instead of a fresh interpreter (about 0.3 CPU-s per module run, 0.5 with boto3). DRKIT_INPROCESS=0
in ansible-playbook's environment turns that off (plain Ansible behaviour).

It also ends ansible-playbook without the interpreter's teardown once the playbook is over
(v2_playbook_on_stats): freeing every module and object a run loaded (Ansible, boto3's models)
took 0.3-0.5 s on an idle machine and over 1 s under load after the last event, at the end of
every drkit run (a drill has two). The exit still waits for any non-daemon thread, runs the
atexit handlers (Ansible's temporary files, an ssh-agent it started, logging) and flushes
stdout and stderr, with the exit code Ansible gave; only the teardown is skipped.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: warmup
type: aggregate
short_description: Import drkit.dr's step dependencies when ansible-playbook starts
description:
  - Imports what drkit.dr's in-process steps use (psycopg, boto3, drkit.flows) into
    ansible-playbook's own process as it starts, before the first play, so that the workers it
    forks start with them. Reports nothing.
  - Makes every Python module of a local-connection task run inside the task's worker process
    instead of a fresh interpreter (set E(DRKIT_INPROCESS=0) for Ansible's own behaviour).
  - Once the playbook is over, ansible-playbook exits without the interpreter's teardown (after
    its atexit handlers and with its own exit code).
requirements:
  - enable in ansible.cfg (callbacks_enabled = drkit.dr.warmup)
author: drkit maintainers (@drkit)
"""

import atexit
import os
import sys
import threading
from typing import NoReturn

from ansible.plugins.callback import CallbackBase
from ansible_collections.drkit.dr.plugins.plugin_utils.inprocess import preload
from ansible_collections.drkit.dr.plugins.plugin_utils.inworker import install


def _exit_without_teardown() -> None:
    """From now on, sys.exit in this process (ansible-playbook's last call) ends it at once."""
    pid, exit_ = os.getpid(), sys.exit

    def fast_exit(code: str | int | None = None) -> NoReturn:
        if os.getpid() != pid:  # a forked worker: its own exit, as before
            exit_(code)
        for thread in threading.enumerate():
            if thread is not threading.main_thread() and not thread.daemon:
                thread.join()
        atexit._run_exitfuncs()  # pylint: disable=protected-access
        if isinstance(code, str):
            sys.stderr.write(code + "\n")  # as sys.exit(message) prints it
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code if isinstance(code, int) else (0 if code is None else 1))

    sys.exit = fast_exit


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "drkit.dr.warmup"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        preload()  # once per process; loading the in-process plugin later finds it done
        install()  # before any worker forks: every local module run in its worker (inworker.py)

    def v2_playbook_on_stats(self, stats: object) -> None:
        # The last event: no worker is left; what follows is clean-up, then sys.exit.
        _exit_without_teardown()
