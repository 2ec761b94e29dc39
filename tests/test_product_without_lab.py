"""The product works without the lab's extra (issue 13: `pip install drkit` does not bring moto,
Flask or Werkzeug; `drkit[lab]` does). A subprocess hides those packages (and psycopg, which
only the collection's PostgreSQL modules use, in Ansible's own processes) behind a meta-path
finder, then imports every product module and runs `drkit --help` and `drkit plan validate`.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HIDDEN = ("moto", "flask", "werkzeug", "psycopg", "cfnlint")

PRELUDE = textwrap.dedent(f"""
    import importlib.abc, sys

    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {HIDDEN!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}} (hidden: the lab extra)",
                                          name=name)
            return None

    sys.meta_path.insert(0, Hide())
""")


def _run(body: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(body)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_the_hiding_finder_hides() -> None:
    # Without this, the tests below would pass with nothing hidden (a test that cannot fail).
    proc = _run("import moto.server\n")
    assert proc.returncode == 1 and "hidden: the lab extra" in proc.stderr, proc.stderr


def test_every_product_module_imports_without_the_lab_extra() -> None:
    proc = _run(f"""
        import importlib, pathlib
        root = pathlib.Path({str(REPO / "drkit")!r})
        names = []
        for p in sorted(root.rglob("*.py")):
            parts = list(p.relative_to(root.parent).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if parts[:2] == ["drkit", "lab"] and len(parts) > 2:
                continue  # the lab's own processes (payments service, region client...)
            names.append(".".join(parts))
        for n in names:
            importlib.import_module(n)
        print(len(names), "imported")
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.split()[0]) > 40, proc.stdout


def test_help_and_plan_validate_work_without_the_lab_extra() -> None:
    for argv, expect in ((["drkit", "--help"], "drill"),
                         (["drkit", "plan", "validate", "--plan", "drkit.yml"], "drkit.yml")):
        proc = _run(f"""
            import sys
            from drkit.cli import main
            sys.argv = {argv!r}
            main()
        """)
        assert proc.returncode == 0, (argv, proc.stdout, proc.stderr[-3000:])
        assert expect in proc.stdout, (argv, proc.stdout)
        assert "Traceback" not in proc.stderr
