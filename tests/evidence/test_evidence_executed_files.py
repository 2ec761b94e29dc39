"""The record hashes every file a drill can execute (issue 15): its phase playbooks, task files,
templates, Terraform modules (iac/), drkit's collection (modules, action plugins,
module_utils) and the inventory. Through the drill's runner seam (fast, no lab)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from drkit import drill, evidence
from drkit.evidence.ledger import record_files
from tests.drill.test_drill_listeners import green, signed_plan


def test_a_drill_record_hashes_the_code_it_can_run(tmp_path: Path) -> None:
    root = tmp_path / "plan"
    plan = signed_plan(root)
    planted = {"iac/main.tf": 'resource "null_resource" "x" {}\n',
               "iac/modules/db/main.tf": "variable \"name\" {}\n",
               "playbooks/adapters/data/x/promote.yml": "- ansible.builtin.debug: {msg: x}\n",
               "playbooks/templates/haproxy.cfg.j2": "backend {{ x }}\n"}
    for rel, text in planted.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    o = drill.run_drill(plan, "region-failover", "staging", runner=green())
    assert o.evidence_id is not None
    store = evidence.open_store(plan.model.evidence.store, plan=plan)
    last = record_files(store)[0][-1]
    files = {f["path"]: f["sha256"] for f in json.loads(store.read(last.key))["files"]}
    for rel, text in planted.items():
        got = [h for p, h in files.items() if p.endswith(rel)]
        assert got == [hashlib.sha256(text.encode()).hexdigest()], (rel, sorted(files))
    plugins = "collections/ansible_collections/drkit/dr/plugins"
    for used in (f"{plugins}/modules/pg.py", f"{plugins}/action/smoke.py", "inv.yml",
                 "preflight.yml"):
        assert any(p.endswith(used) for p in files), (used, sorted(files))
