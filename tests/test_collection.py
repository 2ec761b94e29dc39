"""drkit's collection (drkit.dr) as Galaxy and an execution environment take it (issue 13).

- `ansible-test sanity` passes on it (scripts/sanity: every sanity test on Python 3.11, with
  tests/sanity/ignore-2.19.txt for the checks that do not apply), and fails on a broken copy
  (so the test can fail);
- `ansible-galaxy collection build` makes an artifact holding every plugin and nothing of
  ansible-test's output or caches;
- `ansible-builder create -f execution-environment.yml` accepts the file and its build context
  carries the collection.

Not a lab test: no lab comes up. The sanity run takes minutes: ansible-test starts each check in
its own virtual environment (cached in ~/.ansible/test/venv; a clean machine installs them from
PyPI on the first run).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COLLECTION = REPO / "collections" / "ansible_collections" / "drkit" / "dr"
BIN = Path(sys.executable).parent


def _run(argv: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=kwargs.pop("cwd", REPO), capture_output=True, text=True,
                          timeout=timeout, check=False, **kwargs)


def _tail(proc: subprocess.CompletedProcess[str], lines: int = 60) -> str:
    return "\n".join((proc.stdout + proc.stderr).splitlines()[-lines:])


@pytest.mark.timeout(2400)
def test_ansible_test_sanity_passes_on_the_collection() -> None:
    proc = _run([str(REPO / "scripts" / "sanity")], timeout=2300)
    assert proc.returncode == 0, _tail(proc)
    # Every test ran (none skipped for a missing Python or tool, which exits 0 too).
    out = proc.stdout + proc.stderr
    for name in ("validate-modules", "ansible-doc", "pylint", "pep8", "yamllint", "import",
                 "action-plugin-docs", "ignores"):
        assert f'Running sanity test "{name}"' in out, out[-3000:]
    assert "Skipping sanity test" not in out, out[-3000:]


def test_sanity_fails_on_a_broken_copy(tmp_path: Path) -> None:
    # The same script on a copy whose module documentation no longer parses: it must fail and
    # say where (the run above could otherwise pass by checking nothing).
    copy = tmp_path / "ansible_collections" / "drkit" / "dr"
    shutil.copytree(COLLECTION, copy, ignore=shutil.ignore_patterns(
        "output", "__pycache__", ".ruff_cache"))
    module = copy / "plugins" / "modules" / "pg_info.py"
    text = module.read_text()
    assert "short_description:" in text
    module.write_text(text.replace("short_description:", "short_description: broken: here:", 1))
    proc = _run([str(REPO / "scripts" / "sanity"), "--test", "validate-modules"], timeout=900,
                env={**os.environ, "DRKIT_SANITY_COLLECTION": str(copy)})
    assert proc.returncode != 0, _tail(proc)
    assert "plugins/modules/pg_info.py" in proc.stdout + proc.stderr, _tail(proc)


def test_galaxy_builds_the_collection_with_every_plugin(tmp_path: Path) -> None:
    proc = _run([str(BIN / "ansible-galaxy"), "collection", "build", str(COLLECTION),
                 "--output-path", str(tmp_path)], timeout=300)
    assert proc.returncode == 0, _tail(proc)
    galaxy = yaml.safe_load((COLLECTION / "galaxy.yml").read_text())
    artifact = tmp_path / f"{galaxy['namespace']}-{galaxy['name']}-{galaxy['version']}.tar.gz"
    assert artifact.is_file(), sorted(p.name for p in tmp_path.iterdir())
    with tarfile.open(artifact) as tar:
        names = set(tar.getnames())
    plugins = {p.relative_to(COLLECTION).as_posix() for p in (COLLECTION / "plugins").rglob("*.py")
               if "__pycache__" not in p.parts}
    assert plugins and plugins <= names, sorted(plugins - names)
    assert {"MANIFEST.json", "FILES.json", "meta/runtime.yml"} <= names
    leaked = sorted(n for n in names if n.startswith("tests/output") or "__pycache__" in n
                    or ".ruff_cache" in n or n.endswith(".pyc"))
    assert not leaked, leaked


def test_execution_environment_context_carries_the_collection(tmp_path: Path) -> None:
    context = tmp_path / "context"
    proc = _run([str(BIN / "ansible-builder"), "create", "-f", "execution-environment.yml",
                 "-c", str(context)], timeout=300)
    assert proc.returncode == 0, _tail(proc)
    build = context / "_build"
    assert (context / "Containerfile").is_file() or (context / "Dockerfile").is_file()
    shipped = build / "drkit.dr"
    assert yaml.safe_load((shipped / "galaxy.yml").read_text())["name"] == "dr"
    for path in (COLLECTION / "plugins").rglob("*.py"):
        if "__pycache__" not in path.parts:
            rel = path.relative_to(COLLECTION)
            assert (shipped / rel).read_bytes() == path.read_bytes(), rel
    # The shipped collections it calls come from the same requirements file as a Galaxy install.
    assert (build / "requirements.yml").read_text() == (
        REPO / "collections" / "requirements.yml").read_text()


def test_every_plugin_documentation_block_is_yaml() -> None:
    """The quick form of sanity's ansible-doc check, for the edit loop (scripts/test --fast):
    a ': ' in a description's text makes a block invalid YAML and ansible-doc fails on it."""
    import ast

    checked = 0
    for path in sorted((COLLECTION / "plugins").rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                    and node.targets[0].id in ("DOCUMENTATION", "EXAMPLES", "RETURN")
                    and isinstance(node.value, ast.Constant)):
                try:
                    yaml.safe_load(node.value.value)
                except yaml.YAMLError as e:
                    pytest.fail(f"{path.relative_to(REPO)}: {node.targets[0].id}: {e}")
                checked += 1
    assert checked > 30, checked
