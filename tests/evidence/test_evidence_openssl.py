"""The documented recipe (docs/evidence.md): the key's fingerprint with openssl, then the
shipped auditor script drkit-verify (python3 + openssl) over a copy of the store.

The recipe is read from the document itself, so the document cannot drift from what works.
"""

from __future__ import annotations

import hashlib
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


ROOT = Path(__file__).resolve().parents[2]


def _audit_dir(store, keys, tmp_path: Path) -> Path:
    """What an auditor has: a copy of the store, the script, the public key, the recipe."""
    d = tmp_path / "audit"
    d.mkdir()
    shutil.copytree(store.root, d / "evidence")
    shutil.copy(ROOT / "drkit-verify", d / "drkit-verify")
    shutil.copy(keys.public, d / "evidence.pub")
    (d / "recipe.sh").write_text(recipe())
    return d


def _run(d: Path) -> subprocess.CompletedProcess[str]:
    # The system's tools, not the venv's: an auditor has no drkit.
    return subprocess.run(["bash", "-eu", "-o", "pipefail", "recipe.sh"], cwd=d,
                          capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C.UTF-8"})


def _record(d: Path, rec) -> Path:
    return d / "evidence" / "records" / f"{rec.seq:08d}-{rec.id}.json"


def test_recipe_verifies_a_fresh_store(store, plan, keys, tmp_path):
    recs = [seal_one(store, plan, tmp_path, approved_by="Zoë Ångström"),  # non-ASCII, on purpose
            seal_one(store, plan, tmp_path)]
    out = _run(_audit_dir(store, keys, tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    der = subprocess.run(["openssl", "pkey", "-pubin", "-in", str(keys.public), "-outform",
                          "DER"], capture_output=True, check=True).stdout
    assert f"key fingerprint: {hashlib.sha256(der).hexdigest()}" in out.stdout
    assert recs[0].key_id == hashlib.sha256(der).hexdigest()
    assert "intact: 2 records" in out.stderr


def test_recipe_fails_on_a_changed_record(store, plan, keys, tmp_path):
    rec = seal_one(store, plan, tmp_path)
    d = _audit_dir(store, keys, tmp_path)
    doc = json.loads(_record(d, rec).read_text())
    doc["verdict"] = "fail"
    _record(d, rec).write_text(json.dumps(doc))
    out = _run(d)
    assert out.returncode == 1 and ": modified: " in out.stdout


def test_recipe_fails_on_a_re_hashed_record(store, plan, keys, tmp_path):
    from drkit.evidence.record import canonical

    rec = seal_one(store, plan, tmp_path)
    d = _audit_dir(store, keys, tmp_path)
    doc = json.loads(_record(d, rec).read_text())
    doc["operator"] = "mallory"
    doc["hash"] = hashlib.sha256(canonical(doc)).hexdigest()
    _record(d, rec).write_text(json.dumps(doc))
    out = _run(d)
    assert out.returncode == 1 and ": bad-signature: " in out.stdout


def test_recipe_fails_on_a_changed_artifact(store, plan, keys, tmp_path):
    rec = seal_one(store, plan, tmp_path)
    d = _audit_dir(store, keys, tmp_path)
    (d / "evidence" / "artifacts" / rec.id / "summary.json").write_text("{}\n")
    out = _run(d)
    assert out.returncode == 1 and ": artifact-changed: artifact summary.json" in out.stdout
