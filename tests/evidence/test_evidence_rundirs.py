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


PLANTED = {"lab access key": "AKIALABPLANTED0001", "AWS secret": "awsSecretPlanted/0002+x",
           "canary secret": "canary-secret-planted-0003"}


def test_a_run_folder_is_private_and_redacted(tmp_path):
    """A real ansible-playbook run through the engine (as drills and runbooks run theirs) of a
    playbook that prints every secret it gets: an extra var with a secret name, an AWS key in
    its environment, and a value only the caller knows is secret (the canary's). The run
    folder is 0700, its files 0600, and no secret is in any of them."""
    art = tmp_path / "runs" / "20250101T000000Z-0badc0de"
    r = engine.run_playbook(
        Path(__file__).parent / "data" / "playbooks" / "careless.yml",
        inventory=Path(__file__).resolve().parents[2] / "inventories" / "lab" / "hosts.yml",
        content_root=Path(__file__).resolve().parents[2], artifacts_dir=art,
        extravars={"lab": {"access_key": PLANTED["lab access key"]},
                   "canary": PLANTED["canary secret"]},
        envvars={"AWS_SECRET_ACCESS_KEY": PLANTED["AWS secret"]},
        secrets=(PLANTED["canary secret"],))
    assert r.ok, r.failure
    # The secrets were printed (the test would prove nothing otherwise) and scrubbed: the
    # debug message in stdout, the command's output in its job event.
    assert "msg: [REDACTED] / [REDACTED] / [REDACTED]" in r.stdout_path.read_text()
    assert '"stdout":"[REDACTED] [REDACTED] [REDACTED]"' in r.events_path.read_text().replace(
        '": "', '":"')
    files = [p for p in art.rglob("*") if p.is_file()]
    assert {p.name for p in files} == {"stdout", "job_events.jsonl"}
    assert (art.stat().st_mode & 0o777) == 0o700
    for p in files:
        assert (p.stat().st_mode & 0o777) == 0o600, p
        data = p.read_bytes()
        for what, value in PLANTED.items():
            assert value.encode() not in data, f"{what} in {p}"
