#!/usr/bin/python
"""drkit.dr.pg_info: read-only facts about one PostgreSQL cluster (role, replication, lag).

Why custom: community.postgresql.postgresql_info needs a login and does not report recovery
state and replay lag in one probe that also answers 'unreachable'.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_info
short_description: Report whether a PostgreSQL cluster is up, primary or standby, and its lag
description:
  - Connects as the superuser over TCP and reports whether the cluster is reachable and in
    recovery. On a primary it returns the rows of C(pg_stat_replication); on a standby the last
    replayed transaction's time, the replay lag in seconds and the WAL receiver's status.
  - "Read-only: never changes anything, and runs in check mode too."
options:
  port:
    description: Port on O(host).
    type: int
    required: true
  host:
    description: Host to connect to. By default C(DRKIT_PG_HOST) (the lab's socket
      directory), else 127.0.0.1.
    type: str
  user:
    description: Role to connect as (a superuser sees every replication row).
    type: str
    default: postgres
  timeout:
    description: Connect timeout in seconds.
    type: int
    default: 2
  fail_unreachable:
    description: Fail when the cluster cannot be reached (by default report reachable=false).
    type: bool
    default: false
author: drkit maintainers (@drkit)
"""

EXAMPLES = r"""
- name: Read the primary's replication state
  drkit.dr.pg_info:
    port: "{{ drkit_lab_ports.pg_primary }}"
  register: drkit_primary_info

- name: Check that the standby is streaming synchronously
  ansible.builtin.assert:
    that:
      - drkit_primary_info.replication | selectattr('state', 'eq', 'streaming') | list | length > 0
"""

RETURN = r"""
reachable:
  description: Whether a connection succeeded.
  returned: always
  type: bool
in_recovery:
  description: pg_is_in_recovery() (true on a standby); null when unreachable.
  returned: always
  type: bool
replication:
  description: On a primary, one row per standby from pg_stat_replication.
  returned: always
  type: list
  elements: dict
  contains:
    application_name: {description: The standby's application_name., type: str}
    state: {description: "streaming, catchup, ...", type: str}
    sync_state: {description: "sync, async, potential or quorum.", type: str}
    replay_lag_s: {description: replay_lag in seconds (0 when idle)., type: float}
    lag_bytes: {description: WAL bytes the standby has not replayed yet., type: int}
standby:
  description: On a standby, its progress; null on a primary.
  returned: always
  type: dict
  contains:
    last_replay: {description: Commit time of the last replayed transaction (ISO 8601)., type: str}
    lag_s: {description: Seconds behind the primary (0 when it has replayed all it received
      and streams)., type: float}
    replay_age_s: {description: Seconds since the last replayed transaction's commit., type: float}
    receiver_status: {description: "The WAL receiver's status (streaming, ...).", type: str}
    sender_port: {description: Port of the primary it streams from., type: int}
error:
  description: Why the cluster could not be read, if it could not.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.drkit.dr.plugins.module_utils.pgutil import info


def main():
    module = AnsibleModule(
        argument_spec=dict(
            port=dict(type="int", required=True),
            host=dict(type="str"),
            user=dict(type="str", default="postgres"),
            timeout=dict(type="int", default=2),
            fail_unreachable=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    result = info(p["port"], timeout=p["timeout"], host=p["host"], user=p["user"])
    if p["fail_unreachable"] and not result["reachable"]:
        module.fail_json(msg="PostgreSQL on port %d: %s" % (p["port"], result["error"]),
                         **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
