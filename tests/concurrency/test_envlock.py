"""The environment lock (drkit.envlock) without a lab: real processes hold it, real SIGKILLs
release it. What the lab tests prove end to end (tests/concurrency/test_interleaving.py), this
proves for each rule alone, in about a second: refusal names the holder in one line (exit 2), a
dead holder is taken over and said so, read-only callers never take it, the drill mark
outlives a killed drill, the CLI refuses and the scheduled form skips."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from drkit import envlock
from drkit.envlock import EnvironmentBusy
from tests.drills import make_plan

REPO = Path(__file__).resolve().parents[2]
DRKIT = str(Path(sys.executable).parent / "drkit")


def _holder_process(state_dir: Path, command: str, *, run_id: str = "R-1", drill: bool = False,
                    key: str = "lab") -> subprocess.Popen[str]:
    """Another process that holds the lock (through drkit's own code) until it is killed."""
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from drkit import envlock
        with envlock.hold(Path({str(state_dir)!r}), "lab", {command!r}, key={key!r},
                          run_id={run_id!r}, operator="alice", drill={drill!r}):
            print("held", flush=True)
            time.sleep(120)
        """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    return child


@pytest.fixture
def held(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    child = _holder_process(tmp_path, "drill run region-failover", run_id="20261130T1-abc",
                            drill=True)
    try:
        yield child
    finally:
        child.kill()
        child.wait()


def test_a_second_command_is_refused_naming_the_holder_in_one_line(
        tmp_path: Path, held: subprocess.Popen[str]) -> None:
    with pytest.raises(EnvironmentBusy) as err:
        with envlock.hold(tmp_path, "lab", "lab up", key="lab"):
            pytest.fail("two holders at once")
    e = err.value
    assert e.exit_code == 2 and "\n" not in str(e)
    for part in ("`drkit drill run region-failover`", "(run 20261130T1-abc)", "by alice",
                 f"pid {held.pid}", f"on {socket.gethostname()}", "since 20",
                 "nothing was changed"):
        assert part in str(e), (part, str(e))
    assert e.holder.pid == held.pid and e.holder.command == "drill run region-failover"
    # Another environment has its own lock.
    with envlock.hold(tmp_path, "staging", "runbook run cert-rotation") as lease:
        assert lease.took_over is None


def test_read_only_callers_see_the_holder_without_taking_the_lock(
        tmp_path: Path, held: subprocess.Popen[str]) -> None:
    for _ in range(3):  # peeking never takes it, so it never makes the holder's peers fail
        who = envlock.peek(tmp_path, "lab")
        assert who is not None and who.pid == held.pid and who.alive
    held.terminate()  # a clean exit (SIGTERM ends the sleep through Python's default handler)
    held.wait()


def test_a_holder_killed_with_sigkill_is_taken_over_and_said_so(tmp_path: Path) -> None:
    child = _holder_process(tmp_path, "runbook run cert-rotation", run_id="RB-7", drill=False)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    stale = envlock.peek(tmp_path, "lab")
    assert stale is not None and stale.pid == child.pid and not stale.alive
    notes: list[str] = []
    with envlock.hold(tmp_path, "lab", "lab down", key="lab", on_takeover=notes.append) as lease:
        assert lease.took_over is not None and lease.took_over.pid == child.pid
        evidence = lease.to_evidence()
        assert evidence["took_over"]["command"] == "runbook run cert-rotation"
        assert evidence["took_over"]["run_id"] == "RB-7"
        assert evidence["holder"]["command"] == "lab down"
        assert evidence["holder"]["pid"] == os.getpid()
    assert len(notes) == 1 and f"pid {child.pid}" in notes[0] and "took over" in notes[0]
    # A holder that ended normally leaves nothing to take over.
    with envlock.hold(tmp_path, "lab", "lab up", key="lab", on_takeover=notes.append) as again:
        assert again.took_over is None
    assert len(notes) == 1 and envlock.peek(tmp_path, "lab") is None


def test_the_same_thread_reenters_only_when_it_asks(tmp_path: Path) -> None:
    with envlock.hold(tmp_path, "lab", "drill recover", key="lab") as outer:
        with envlock.hold(tmp_path, "lab", "lab up", key="lab", reenter=True) as inner:
            assert inner.holder == outer.holder  # works under the lease already held
        with pytest.raises(EnvironmentBusy, match="`drkit drill recover`"):
            with envlock.hold(tmp_path, "lab", "drill run x", key="lab"):
                pass
        assert envlock.peek(tmp_path, "lab") == outer.holder  # the nested exit kept it
    assert envlock.peek(tmp_path, "lab") is None


def test_a_killed_drill_leaves_its_mark_unfinished_until_a_drill_command_ends(
        tmp_path: Path) -> None:
    child = _holder_process(tmp_path, "drill run region-failover", run_id="D-1", drill=True)
    running = envlock.drill_mark(tmp_path, "lab")
    assert running is not None and running.running and not running.unfinished
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    mark = envlock.drill_mark(tmp_path, "lab")
    assert mark is not None and mark.unfinished and mark.run_id == "D-1"
    with envlock.hold(tmp_path, "lab", "drill recover", key="lab", drill=True):
        pass
    done = envlock.drill_mark(tmp_path, "lab")
    assert done is not None and done.ended_at and not done.unfinished


# ---------------------------------------------------------------------------------------------
# The CLI: a refused command is one line and exit 2; a scheduled drill skips instead


@pytest.fixture
def cli_env(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A plan of the test's own whose lab state lives in tmp_path (no lab runs)."""
    (tmp_path / "plan").mkdir()
    plan = make_plan(tmp_path / "plan")
    env = {**os.environ, "DRKIT_LAB_DIR": str(tmp_path / "lab"), "DRKIT_PLAN": str(plan)}
    yield plan, env


@pytest.mark.parametrize("argv", [
    ["drill", "run", "region-failover", "--env", "lab"],
    ["drill", "resume", "does-not-matter"],
    ["drill", "recover", "--env", "lab"],
    ["runbook", "run", "cert-rotation", "--env", "lab", "--yes"],
    ["lab", "up"],
    ["lab", "down"],
], ids=lambda a: " ".join(a[:2]))
def test_cli_refuses_every_changing_command_while_the_environment_is_held(
        cli_env: tuple[Path, dict[str, str]], argv: list[str]) -> None:
    plan, env = cli_env
    state = Path(env["DRKIT_LAB_DIR"])
    child = _holder_process(state, "drill run region-failover", run_id="20261130T1-abc")
    try:
        if argv[1] == "resume":  # resume needs a run to resume: the held drill's own
            run_dir = state / "runs" / "20261130T1-abc-region-failover"
            run_dir.mkdir(parents=True)
            (run_dir / "progress.json").write_text(json.dumps({
                "id": "20261130T1-abc", "scenario": "region-failover", "environment": "lab",
                "phases": [], "clock_started_at": None}))
            argv = ["drill", "resume", "20261130T1-abc"]
        before = sorted(p.relative_to(state) for p in state.rglob("*"))
        proc = subprocess.run([DRKIT, *argv, "--plan", str(plan)], capture_output=True,
                              text=True, env=env, timeout=60)
        assert proc.returncode == 2, (proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("drkit: another drill is running on "
                                                       "environment 'lab'"), proc.stderr
        assert f"pid {child.pid}" in lines[0] and "(run 20261130T1-abc)" in lines[0]
        # It changed nothing: no run directory, no evidence record, no lab state.
        assert sorted(p.relative_to(state) for p in state.rglob("*")) == before
        assert not list((plan.parent / "evidence").glob("records/*"))
    finally:
        child.kill()
        child.wait()


def test_scheduled_drill_skips_when_the_environment_is_busy(
        cli_env: tuple[Path, dict[str, str]]) -> None:
    from drkit.config import load_plan
    from drkit.schedule import Format, job_for

    plan, env = cli_env
    job = job_for(load_plan(plan), "region-failover", "lab", fmt=Format.CRON,
                  drkit=DRKIT)
    assert "--skip-if-busy" in job.argv()
    child = _holder_process(Path(env["DRKIT_LAB_DIR"]), "runbook run cert-rotation",
                            run_id="RB-1")
    try:
        proc = subprocess.run(job.argv(), capture_output=True, text=True, env=env,
                              timeout=60, cwd=plan.parent)
    finally:
        child.kill()
        child.wait()
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["verdict"] == "skipped"
    assert "environment busy: `drkit runbook run cert-rotation` (run RB-1)" in out["reasons"][0]
    assert f"pid {child.pid}" in out["reasons"][0]


@pytest.mark.parametrize("argv", [
    ["lab", "status"],
    ["lab", "status", "--json"],
    ["drill", "check", "--env", "lab"],
], ids=lambda a: " ".join(a))
def test_read_only_commands_never_wait_for_the_lock(
        cli_env: tuple[Path, dict[str, str]], argv: list[str]) -> None:
    """They run while the environment is held (no lab here: they report it down, exit 1) and
    `lab status` names the holder."""
    plan, env = cli_env
    child = _holder_process(Path(env["DRKIT_LAB_DIR"]), "lab up", run_id="")
    try:
        proc = subprocess.run([DRKIT, *argv, "--plan", str(plan)], capture_output=True,
                              text=True, env=env, timeout=120)
    finally:
        child.kill()
        child.wait()
    assert proc.returncode == 1, (proc.stdout[-1000:], proc.stderr[-1000:])
    assert "is running on environment" not in proc.stderr + proc.stdout
    if argv[:2] == ["lab", "status"]:
        busy = (json.loads(proc.stdout)["busy"] if "--json" in argv else
                next(line for line in proc.stdout.splitlines() if line.startswith("busy: ")))
        assert f"`drkit lab up` by alice, pid {child.pid}" in busy, busy
    else:  # drill check says who changes the environment under it
        assert f"`drkit lab up` by alice, pid {child.pid} on {socket.gethostname()}, since" \
            in proc.stdout and "is changing environment 'lab' meanwhile" in proc.stdout, \
            proc.stdout
