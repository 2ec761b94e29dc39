"""The documented recipe (docs/evidence.md) verifies a record with sha256sum, openssl, python3.

The recipe is read from the document itself, so the document cannot drift from what works.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from .conftest import seal_one

DOC = Path(__file__).resolve().parents[2] / "docs" / "evidence.md"
# scripts/install provides openssl; sha256sum and python3 come with Debian. The recipe is the
# auditor's, so these tools are never optional here.
TOOLS_PRESENT = all(shutil.which(t) for t in ("openssl", "sha256sum", "python3"))


def test_the_auditors_tools_are_installed() -> None:
    assert TOOLS_PRESENT, "openssl, sha256sum and python3 are needed: run scripts/install"


def recipe() -> str:
    m = re.search(r"<!-- recipe:start -->\n```sh\n(.*?)```\n<!-- recipe:end -->",
                  DOC.read_text(), re.S)
    assert m, "docs/evidence.md lost its recipe block"
    return m.group(1)


def _audit_dir(store, keys, rec, tmp_path: Path) -> Path:
    d = tmp_path / "audit"
    d.mkdir()
    shutil.copy(store.root / "records" / f"{rec.seq:08d}-{rec.id}.json", d / "record.json")
    shutil.copytree(store.root / "artifacts" / rec.id, d / "artifacts" / rec.id)
    shutil.copy(keys.public, d / "evidence.pub")
    (d / "recipe.sh").write_text(recipe())
    return d


def _run(d: Path) -> subprocess.CompletedProcess[str]:
    # The system's tools, not the venv's: an auditor has no drkit.
    return subprocess.run(["bash", "-eu", "-o", "pipefail", "recipe.sh"], cwd=d,
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C.UTF-8"})


def test_recipe_verifies_a_fresh_record(store, plan, keys, tmp_path):
    rec = seal_one(store, plan, tmp_path, approved_by="Zoë Ångström")  # non-ASCII, on purpose
    out = _run(_audit_dir(store, keys, rec, tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"hash OK: {rec.hash}" in out.stdout
    assert "Signature Verified Successfully" in out.stdout
    assert out.stdout.count(": OK") == len(rec.artifacts) == 7


def test_recipe_fails_on_a_changed_record(store, plan, keys, tmp_path):
    rec = seal_one(store, plan, tmp_path)
    d = _audit_dir(store, keys, rec, tmp_path)
    doc = json.loads((d / "record.json").read_text())
    doc["verdict"] = "fail"
    (d / "record.json").write_text(json.dumps(doc))
    out = _run(d)
    assert out.returncode != 0 and "hash OK" not in out.stdout


def test_recipe_fails_on_a_re_hashed_record(store, plan, keys, tmp_path):
    import hashlib

    from drkit.evidence.record import canonical

    rec = seal_one(store, plan, tmp_path)
    d = _audit_dir(store, keys, rec, tmp_path)
    doc = json.loads((d / "record.json").read_text())
    doc["operator"] = "mallory"
    doc["hash"] = hashlib.sha256(canonical(doc)).hexdigest()
    (d / "record.json").write_text(json.dumps(doc))
    out = _run(d)
    assert "hash OK" in out.stdout and out.returncode != 0
    assert "Signature Verification Failure" in out.stdout + out.stderr


def test_recipe_fails_on_a_changed_artifact(store, plan, keys, tmp_path):
    rec = seal_one(store, plan, tmp_path)
    d = _audit_dir(store, keys, rec, tmp_path)
    (d / "artifacts" / rec.id / "summary.json").write_text("{}\n")
    out = _run(d)
    assert out.returncode != 0 and "summary.json: FAILED" in out.stdout
