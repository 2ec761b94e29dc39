"""The code passes its own static checks: ruff (style, imports, bugbear) and mypy (types)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_ruff_is_clean() -> None:
    res = _run(str(BIN / "ruff"), "check", "drkit", "tests", "bench", "playbooks")
    assert res.returncode == 0, res.stdout + res.stderr


def test_mypy_is_clean() -> None:
    res = _run(str(BIN / "mypy"), "drkit")
    assert res.returncode == 0, res.stdout + res.stderr
