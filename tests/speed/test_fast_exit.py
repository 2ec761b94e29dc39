"""drkit.dr.warmup ends ansible-playbook without the interpreter's teardown once the playbook
is over (issue 19): the exit code, the recap and Ansible's own clean-up (atexit handlers, its
temporary directory) are those of an ordinary exit."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from drkit import engine

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("task", "rc"), [({"ansible.builtin.debug": {"msg": "hi"}}, 0),
                                          ({"ansible.builtin.fail": {"msg": "no"}}, 2)])
def test_ansible_playbook_exits_with_its_code_output_and_clean_up(
        tmp_path: Path, task: dict[str, object], rc: int) -> None:
    import yaml

    pb = tmp_path / "pb.yml"
    pb.write_text(yaml.safe_dump([{"name": "p", "hosts": "localhost", "gather_facts": False,
                                   "tasks": [{"name": "t", **task}]}]))
    log = tmp_path / "ansible.log"
    env = {**os.environ, **engine._ansible_env(REPO, None),
           # Ansible's temporary files and its log (flushed at exit by logging's atexit hook)
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"), "ANSIBLE_LOG_PATH": str(log)}
    assert "drkit.dr.warmup" in (REPO / "ansible.cfg").read_text()
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", "localhost,",
                           "-c", "local", str(pb)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == rc, proc.stdout + proc.stderr
    assert "PLAY RECAP" in proc.stdout and proc.stdout.rstrip().endswith("ignored=0"), proc.stdout
    assert list((tmp_path / "tmp").iterdir()) == []  # its per-run temporary directory went
    assert "PLAY RECAP" in log.read_text()
