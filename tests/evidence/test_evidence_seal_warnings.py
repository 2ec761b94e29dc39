"""Sealing's warnings reach the operator (issue 15): a record sealed without its anchor, without
its RFC 3161 time stamp, or with a key the plan does not pin is still sealed, and `drkit
runbook run` says so: a `warning:` line each, and `warnings` in --json. A real ansible-playbook
run (local connection) of a one-task runbook: no lab needed."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

from typer.testing import CliRunner

from drkit.cli.runbook import app as runbook_app
from drkit.evidence import generate_keypair

PLAN = """\
version: 1
name: warn
regions: {{primary: eu-west-1, secondary: eu-central-1}}
environments:
  local: {{inventory: hosts.ini}}
services:
  payments: {{tier: 1, rto: 30s, rpo: 0s}}
scenarios:
  noop:
    services: [payments]
    phases:
      - {{name: smoke, playbook: runbooks/ping.yml, stops_clock: true}}
evidence:
  store: ./evidence
  signing_key: keys/evidence.key
  anchor: ./not-a-folder/heads.jsonl
  tsa_url: http://127.0.0.1:{port}/tsa
  {pins}
"""

RUNBOOK = """\
---
# purpose: Ping the controller.
# risk: low - reads only
- name: Ping
  hosts: all
  gather_facts: false
  tasks:
    - name: Ping the host
      ansible.builtin.ping:
"""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the test connects: refused


def _plan(root: Path, pins: str) -> Path:
    (root / "runbooks").mkdir(exist_ok=True)
    (root / "runbooks" / "ping.yml").write_text(RUNBOOK)
    (root / "hosts.ini").write_text(
        f"[all]\nh1 ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    (root / "not-a-folder").write_text("the anchor's folder is a file: publishing fails\n")
    if not (root / "keys" / "evidence.key").exists():
        generate_keypair(root / "keys" / "evidence.key")
    plan = root / "drkit.yml"
    plan.write_text(PLAN.format(port=_closed_port(), pins=pins))
    return plan


def test_seal_warnings_are_printed_and_in_json(tmp_path):
    other = "ab" * 32  # a pinned key that is not the one signing
    plan = _plan(tmp_path, f"trusted_keys: [{other}]")
    res = CliRunner().invoke(runbook_app, ["run", "ping", "--env", "local", "--plan", str(plan),
                                           "--json"])
    out = json.loads(res.stdout)
    assert res.exit_code == 0 and out["verdict"] == "pass" and out["evidence"], res.output
    warnings = out["warnings"]
    assert any("sealed but not anchored" in w for w in warnings), warnings
    assert any("without an RFC 3161 time stamp" in w for w in warnings), warnings
    assert any("which evidence.trusted_keys does not pin" in w for w in warnings), warnings
    # Without --json: one line each, after the evidence id.
    plan = _plan(tmp_path, "")
    res = CliRunner().invoke(runbook_app, ["run", "ping", "--env", "local", "--plan", str(plan)])
    assert res.exit_code == 0, res.output
    lines = [line for line in res.stdout.splitlines() if line.startswith("warning: ")]
    assert len(lines) == 3, res.stdout
    for says in ("sealed but not anchored", "without an RFC 3161 time stamp",
                 "is not pinned (evidence.trusted_keys)"):
        assert sum(says in line for line in lines) == 1, (says, lines)


def test_a_drills_seal_warnings_reach_its_output(tmp_path):
    """The drill's record sealed without its anchor: the outcome, its JSON and the CLI's text
    say so (through the drill's runner seam, then the CLI's renderer)."""
    import io

    import yaml

    from drkit import drill
    from drkit.cli.drill import _render
    from drkit.config import load_plan
    from tests.drill.test_drill_listeners import green, signed_plan

    plan = signed_plan(tmp_path)
    (tmp_path / "not-a-folder").write_text("a file where the anchor's folder should be\n")
    data = yaml.safe_load(plan.path.read_text())
    data["evidence"]["anchor"] = "./not-a-folder/heads.jsonl"
    plan.path.write_text(yaml.safe_dump(data, sort_keys=False))
    o = drill.run_drill(load_plan(plan.path), "region-failover", "staging", runner=green())
    assert o.evidence_id is not None
    assert any("sealed but not anchored" in w for w in o.evidence_warnings), o.evidence_warnings
    assert o.to_json()["evidence_warnings"] == list(o.evidence_warnings)
    out = io.StringIO()
    _render(o, out)
    printed = [line for line in out.getvalue().splitlines() if line.startswith("warning: ev")]
    assert len(printed) == len(o.evidence_warnings) >= 2  # not anchored, key not pinned
    assert any("sealed but not anchored" in line for line in printed), printed
