#!/usr/bin/python
"""drkit.dr.smoke: documentation of the action plugin of the same name (plugins/action/smoke.py).

Why custom: the plan's own payment flows, observed through the public entry point from the
controller as a customer would, with the timestamps that stop the recovery clock.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: smoke
short_description: Run the plan's smoke flows through the public entry point until all are green
description:
  - An action plugin that runs on the controller (no module is sent to a host).
  - Runs every named flow through the entry point in rounds until one round is all green or
    the timeout passes. Flows that stay red are not a task failure; the drill's verdict names
    them. Not run in check mode (the flows write payments).
options:
  entry:
    description: URL of the public entry point.
    type: str
    required: true
  flows:
    description: Names of the flows to run.
    type: list
    elements: str
    required: true
  ca_file:
    description: CA the entry point's certificate must chain to.
    type: str
  timeout:
    description: Seconds to wait for an all-green round.
    type: float
    default: 60.0
  interval:
    description: Seconds between rounds.
    type: float
    default: 0.05
  token_file:
    description: File holding the API's bearer token.
    type: str
  pack:
    description:
      - The environment's flow pack (flows/payments-lab.yml is the lab's) as plain data, as
        the drill passes it (drkit_smoke_pack). Its secrets are read on the controller from
        the environment variables or files it names; their values are never arguments.
      - Default, the lab's pack.
    type: dict
author: drkit maintainers (@drkit)
"""

EXAMPLES = r"""
- name: Run the payment flows until green
  drkit.dr.smoke:
    entry: https://127.0.0.1:17401
    flows: [authorize, capture]
    ca_file: /tmp/lab/tls/ca.pem
  register: drkit_smoke_result
"""

RETURN = r"""
smoke:
  description: Outcome of the flows (green, started_at, green_at, attempts, results
    and not_reached, the flows a failing round did not run).
  returned: always
  type: dict
"""
