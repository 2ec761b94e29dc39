"""drkit.dr.warmup: import what drkit.dr's steps use when ansible-playbook starts (issue 19).

plugins/plugin_utils/inprocess.py imports psycopg, boto3 (and its service models) and drkit.flows
into ansible-playbook's own process so that every worker it forks afterwards starts with them.
Without this callback that happens when the first drkit.dr step of a run is loaded, in the
middle of the run's first phase (preflight, failback): 0.3 s on an idle 2-core machine, 1 s and
more under load, on top of the phase's own work. Callbacks load before the first play starts,
so the imports happen with the rest of Ansible's start-up instead. Enabled in ansible.cfg
(callbacks_enabled); it reports nothing.
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
requirements:
  - enable in ansible.cfg (callbacks_enabled = drkit.dr.warmup)
author: drkit maintainers (@drkit)
"""

from ansible.plugins.callback import CallbackBase
from ansible_collections.drkit.dr.plugins.plugin_utils.inprocess import preload


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "drkit.dr.warmup"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        preload()  # once per process; loading the in-process plugin later finds it done
