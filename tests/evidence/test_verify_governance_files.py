"""A local evidence store also holds governance's registers (drkit/governance: findings.jsonl,
requests/), by design: both verifiers (drkit's and the auditor's drkit-verify) leave them alone,
and still name any other file planted at the store's root. Before, any failed drill (it opens
a finding) made `drkit evidence verify` say TAMPERED (found by issue 18's remote drill test)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from drkit.evidence import verify

from .conftest import seal_n

SCRIPT = Path(__file__).resolve().parents[2] / "drkit-verify"


def _both(store, keys) -> tuple[list[str], int]:
    report = verify(store, keys.public)
    from drkit.evidence.signing import FileSigner

    fp = FileSigner(store.root.parent / "keys" / "evidence.key").fingerprint
    got = subprocess.run([sys.executable, str(SCRIPT), str(store.root), "--trust", fp],
                         capture_output=True, text=True, timeout=300, check=False)
    return [i.kind for i in report.issues], got.returncode


def test_governance_registers_beside_the_records_are_not_tampering(store, plan, keys,
                                                                  tmp_path):
    seal_n(store, plan, tmp_path, 2)
    (store.root / "findings.jsonl").write_text('{"seq": 1}\n')
    (store.root / "requests").mkdir()
    (store.root / "requests" / "r1.json").write_text("{}")
    assert _both(store, keys) == ([], 0)
    (store.root / "README.txt").write_text("x")
    kinds, rc = _both(store, keys)
    assert kinds == ["unexpected-file"] and rc == 1
