"""The engine: real ansible-playbook runs through ansible-runner, and nothing outlives them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from drkit import engine

REPO = Path(__file__).resolve().parents[1]
INVENTORY = REPO / "inventories" / "lab" / "hosts.yml"
DATA = REPO / "tests" / "data" / "playbooks"


class Recorder(engine.RunListener):
    def __init__(self) -> None:
        self.plays: list[str] = []
        self.tasks: list[str] = []

    def play_started(self, name: str, at: object) -> None:
        self.plays.append(name)

    def task_finished(self, result: engine.TaskResult) -> None:
        self.tasks.append(f"{result.task}:{result.status}")


def _sleepers() -> list[str]:
    out = subprocess.run(["pgrep", "-af", "sleep 317|tests/data/playbooks/sleep.yml"],
                         capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def test_result_has_plays_tasks_timings_failure_and_published_values(tmp_path: Path) -> None:
    listener = Recorder()
    r = engine.run_playbook(DATA / "two-plays.yml", inventory=INVENTORY, content_root=REPO,
                            extravars={"drkit_token": "s3cr3t-extravar"},
                            artifacts_dir=tmp_path / "art", listener=listener)
    assert r.status == engine.RunStatus.FAILED and r.rc != 0 and not r.ok
    assert [p.name for p in r.plays] == ["First: publish a value", "Second: fail on purpose"]
    assert listener.plays == [p.name for p in r.plays]
    assert listener.tasks == ["Run a command:ok", "Publish a value:ok", "Fail on purpose:failed"]
    assert all(t.duration_s >= 0 and t.ended_at >= t.started_at for t in r.tasks)
    assert r.failure is not None and r.failure.task == "Fail on purpose"
    assert r.failure.host == "localhost" and "non-zero return code" in r.failure.message
    assert r.stats["localhost"].failures == 1 and r.stats["localhost"].ok == 2
    assert r.facts["drkit_test"] == {"answer": 42}
    assert r.stdout_path.is_file() and r.events_path.is_file()
    # Extra vars travel through a private directory that is gone afterwards.
    for path in (tmp_path / "art").rglob("*"):
        assert "s3cr3t-extravar" not in path.read_text(errors="replace"), path


def test_a_cancelled_run_leaves_no_process(tmp_path: Path) -> None:
    start = time.monotonic()
    r = engine.run_playbook(DATA / "sleep.yml", inventory=INVENTORY, content_root=REPO,
                            artifacts_dir=tmp_path / "art",
                            cancel=lambda: time.monotonic() - start > 3)
    assert r.status == engine.RunStatus.CANCELED
    time.sleep(0.5)
    assert _sleepers() == []


def test_ansible_dies_with_drkit(tmp_path: Path) -> None:
    """SIGKILL the process that runs the engine: Ansible and its workers go with it."""
    code = textwrap.dedent(f"""
        from pathlib import Path
        from drkit import engine
        engine.run_playbook(Path({str(DATA / 'sleep.yml')!r}), inventory=Path({str(INVENTORY)!r}),
                            content_root=Path({str(REPO)!r}), artifacts_dir=Path({str(tmp_path)!r}))
        """)
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        while not any("sleep 317" in s for s in _sleepers()):
            assert time.monotonic() < deadline, "the playbook never started its task"
            time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 5
    while _sleepers() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _sleepers() == []


def test_a_failed_loop_says_which_item_and_the_error_line_of_its_output(tmp_path: Path) -> None:
    """A loop's own message is "One or more items failed"; an operator (and a CI log) needs the
    item and what it printed, and Terraform prints its "Error:" line inside box drawing."""
    pb = tmp_path / "loop.yml"
    pb.write_text(textwrap.dedent("""\
        - name: Loop
          hosts: localhost
          gather_facts: false
          tasks:
            - name: Apply each region
              ansible.builtin.shell: |
                if [ {{ item }} = secondary ]; then
                  printf '\\n│ Error: creating RDS instance: timeout\\n' >&2
                  printf '│\\n│   with aws_db_instance.x\\n╵\\n' >&2
                  exit 1
                fi
              loop: [primary, secondary]
              changed_when: false
        """))
    r = engine.run_playbook(pb, inventory=INVENTORY, content_root=REPO,
                            artifacts_dir=tmp_path / "art")
    assert r.failure is not None and r.failure.task == "Apply each region"
    assert r.failure.message == "item 'secondary': Error: creating RDS instance: timeout"
