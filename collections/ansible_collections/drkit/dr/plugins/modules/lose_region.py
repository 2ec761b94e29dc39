#!/usr/bin/python
"""drkit.dr.lose_region: documentation of the action plugin of the same name
(plugins/action/lose_region.py).

Why custom: the fault step must record when it issued the fault, so the recovery clock measures
the outage (issue 19); a module run would start its interpreter first.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: lose_region
short_description: Crash a region's database and kill its instances at once, and say when
description:
  - An action plugin that runs on the controller (no module is sent to a host).
  - The database is stopped with C(pg_ctl stop -m immediate) while every instance gets SIGKILL;
    then every process must be seen gone within O(timeout), or the task fails.
  - Publishes the custom stat C(drkit_fault) (issued_at, confirmed_at, database_pid,
    instances), from which a drill starts its recovery clock.
  - Processes are told by pid files, so this works with regions in network namespaces.
  - In check mode nothing is done and nothing is published.
options:
  database:
    description: The region's PostgreSQL cluster (pgdata required; os_user, bin_dir).
    type: dict
  daemons:
    description: The region's instances, each a dict with name and pidfile (other keys ignored).
    type: list
    elements: dict
    default: []
  timeout:
    description: Seconds to wait for every process to be gone.
    type: float
    default: 10.0
author: drkit maintainers (@drkit)
"""

EXAMPLES = r"""
- name: Lose the primary region
  drkit.dr.lose_region:
    database:
      pgdata: /var/tmp/drkit-lab/pg/eu-west-1/data
    daemons: "{{ drkit_lab_services | selectattr('role', 'eq', 'primary') }}"
  register: drkit_fault
"""

RETURN = r"""
fault:
  description: issued_at (just before the first kill), confirmed_at (all seen gone), database_pid,
    instances ({name pid}); times in UTC ISO 8601.
  returned: unless in check mode
  type: dict
down:
  description: Whether every process was seen gone.
  returned: always
  type: bool
"""
