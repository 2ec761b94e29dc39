#!/usr/bin/python
"""drkit.dr.route53_failover: documentation of the action plugin of the same name
(plugins/action/route53_failover.py).

Why custom: both failover records in one change and read back, without a module start per
record (issue 19).
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: route53_failover
short_description: Point a Route53 failover pair at the active and the standby region
description:
  - An action plugin that runs on the controller with boto3 (no module is sent to a host).
  - One ChangeBatch UPSERTs the PRIMARY record (identifier primary, with the health check) and
    the SECONDARY record (identifier secondary); then both are read back from Route53.
  - Records are told by role, never by region. Check mode reads only.
options:
  zone: {description: The hosted zone's name., type: str, required: true}
  record: {description: The record's name., type: str, required: true}
  type: {description: The record type., type: str, default: CNAME}
  ttl: {description: TTL in seconds., type: int, default: 30}
  active: {description: Value of the PRIMARY record., type: str, required: true}
  standby: {description: Value of the SECONDARY record., type: str, required: true}
  health_check: {description: Health check id of the PRIMARY record., type: str}
  endpoint_url: {description: Another Route53 endpoint (the lab's moto)., type: str}
author: drkit maintainers (@drkit)
"""

EXAMPLES = r"""
- name: Fail over
  drkit.dr.route53_failover:
    zone: drkit.lab
    record: payments.drkit.lab
    active: eu-central-1.payments.drkit.lab
    standby: eu-west-1.payments.drkit.lab
  register: drkit_r53
"""

RETURN = r"""
seen:
  description: "{primary: value, secondary: value} as Route53 lists them after the change."
  returned: always
  type: dict
"""
