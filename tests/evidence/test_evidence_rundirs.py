"""A killed run's private ansible-runner folder (env/extravars, the whole environment) does not
outlive it: `drill recover` removes the folders of dead runs, and only those (issue 15)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from drkit import engine
from drkit.evidence.recorder import pid_start


def _private(tmp: Path, name: str, pid: int, start: int | None) -> Path:
    d = tmp / f"{engine.PRIVATE_PREFIX}{name}"
    (d / "env").mkdir(parents=True)
    (d / "env" / "extravars").write_text("db_password: hunter2\n")
    (d / engine.OWNER_FILE).write_text(f"{pid} {start or ''}\n")
    return d


def test_only_the_folders_of_dead_runs_are_removed(tmp_path):
    proc = subprocess.Popen(["sleep", "60"])
    proc.kill()
    proc.wait()
    dead = _private(tmp_path, "dead", proc.pid, None)
    alive = _private(tmp_path, "alive", os.getpid(), pid_start(os.getpid()))
    reused = _private(tmp_path, "reused", os.getpid(), (pid_start(os.getpid()) or 0) + 1)
    unmarked = tmp_path / f"{engine.PRIVATE_PREFIX}unmarked"
    unmarked.mkdir()  # not ours to judge: no owner mark
    other = tmp_path / "something-else"
    other.mkdir()
    removed = engine.remove_abandoned_private_dirs(tmp_path)
    assert sorted(removed) == sorted([dead, reused])
    assert not dead.exists() and not reused.exists()
    assert alive.exists() and unmarked.exists() and other.exists()


def test_a_run_marks_its_private_folder(tmp_path):
    d = tmp_path / f"{engine.PRIVATE_PREFIX}x"
    d.mkdir()
    engine._mark_owner(d)
    pid, start = (d / engine.OWNER_FILE).read_text().split()
    assert int(pid) == os.getpid() and int(start) == pid_start(os.getpid())
    assert engine.remove_abandoned_private_dirs(tmp_path) == []  # this process is alive
