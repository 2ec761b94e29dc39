"""Every playbook (lab, drill, runbooks) passes ansible-lint with the production profile."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_playbooks_pass_ansible_lint_production_profile() -> None:
    lint = Path(sys.executable).parent / "ansible-lint"
    res = subprocess.run([str(lint), "--nocolor", "playbooks", "runbooks"], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert "Profile 'production' was required, and it passed" in res.stdout + res.stderr
