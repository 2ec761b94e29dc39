"""A real plan on disk for the governance tests: owners, approvals, policy and blackouts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from drkit.config import Plan, load_plan

PLAN = """\
version: 1
name: governance-test
regions: {primary: eu-west-1, secondary: eu-central-1}
environments:
  lab: {inventory: inventory.ini, lab: true}
  staging: {inventory: inventory.ini}
  prod: {inventory: inventory.ini, protected: true, requires_approval: true}
services:
  ledger: {tier: 2, owner: ledger-team, rto: 60s, rpo: 0s}
  payments: {tier: 1, owner: payments-oncall, rto: 30s, rpo: 0s}
scenarios:
  region-failover:
    services: [ledger, payments]
    phases:
      - {name: preflight, playbook: pb/preflight.yml}
      - {name: inject-fault, playbook: pb/inject.yml, starts_clock: true}
      - {name: smoke, playbook: pb/smoke.yml, stops_clock: true}
      - {name: failback, playbook: pb/failback.yml, failback: true}
  cert-drill:
    requires_approval: true
    services: [ledger]
    phases:
      - {name: preflight, playbook: pb/preflight.yml}
evidence:
  store: ./evidence
policy:
  finding_due: {high: 7d, medium: 30d, low: 90d}
"""


def write_plan(root: Path, extra: str = "", *, text: str = PLAN) -> Plan:
    (root / "pb").mkdir(exist_ok=True)
    for name in ("preflight", "inject", "smoke", "failback"):
        (root / "pb" / f"{name}.yml").write_text(f"- name: {name}\n  hosts: all\n")
    (root / "inventory.ini").write_text("localhost ansible_connection=local\n")
    (root / "drkit.yml").write_text(text + extra)
    return load_plan(root / "drkit.yml")


@pytest.fixture
def plan(tmp_path: Path) -> Plan:
    return write_plan(tmp_path)


@pytest.fixture
def plan_with(tmp_path: Path) -> Callable[[str], Plan]:
    """A plan with the given `blackouts:` YAML appended."""
    return lambda extra: write_plan(tmp_path, extra)
