"""One environment, one change at a time, on the real lab (issue 12).

Each test starts ONE real drkit command as a subprocess (a drill, a runbook, `lab up`, `lab
down`) and, while it holds the lab, starts every other changing command against it: a drill,
a runbook, `lab up`, `lab down`. Refusal is fast, so most contenders run in this process
through the library (the CLI is a thin shell over it; one CLI round per test checks the exit
code and the one line). Exactly one proceeds: every contender is refused with the holder named
(command, run id, pid), the holder completes with the verdict it has alone, and the lab ends
healthy. The drill is caught before, during and after its recovery clock; it also takes over
the lock of a `lab up` killed with SIGKILL, and its evidence says so. `lab down`, after a
command lost track of a lab process, still leaves no lab process and no listening lab port.
And the advice matches the state: a half-recovered lab is sent to `drkit drill recover`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from drkit import envlock
from drkit.envlock import EnvironmentBusy, Holder
from tests.conftest import wait_until
from tests.drills import make_plan

DRKIT = str(Path(sys.executable).parent / "drkit")


@pytest.fixture
def plan_path(tmp_path: Path) -> Path:
    """A plan of the test's own (its own evidence store and key) on the session's lab."""
    return make_plan(tmp_path)


def _start(*argv: str, plan: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([DRKIT, *argv, "--plan", str(plan)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str], timeout: float = 600) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _wait_holder(lab: Any, proc: subprocess.Popen[str], command: str,
                 timeout: float = 120) -> Holder:
    """Wait until `proc` holds the lab's lock as `command`; fail if it ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h = envlock.peek(lab.state_dir, "lab")
        if h is not None and h.pid == proc.pid and h.command.startswith(command):
            return h
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"`{command}` ended (rc {proc.returncode}) before it was seen holding "
                        f"the lab: {out[-1500:]}\n{err[-1500:]}")
        time.sleep(0.02)
    pytest.fail(f"`{command}` never held the lab's lock")


def _contenders(plan: Any) -> dict[str, Callable[[], Any]]:
    """Every changing command, through the library, as a contender."""
    from drkit import drill, lab, runbooks

    rb = runbooks.prepare(plan, "cert-rotation", "lab",
                          runbooks.RunbookOptions(confirmed=True))
    return {
        "drill run": lambda: drill.run_drill(plan, "region-failover", "lab"),
        "runbook run": lambda: runbooks.run(rb),
        "lab up": lambda: lab.up(plan),
        "lab down": lambda: lab.down(plan),
    }


def _all_refused(contenders: dict[str, Callable[[], Any]], holder: Holder) -> None:
    """Every contender is refused (exit 2) with the holder named in one line."""
    for name, call in contenders.items():
        with pytest.raises(EnvironmentBusy) as err:
            call()
            pytest.fail(f"{name} proceeded while {holder.describe()} held the lab")
        e = err.value
        assert e.exit_code == 2 and "\n" not in str(e), name
        assert e.holder.pid == holder.pid and e.holder.command == holder.command, name
        assert holder.describe() in str(e), (name, str(e))


def _cli_start(plan_path: Path) -> dict[str, subprocess.Popen[str]]:
    """The four contenders through the installed CLI, all at once (judged by _cli_refused)."""
    argvs = {"drill run": ["drill", "run", "region-failover", "--env", "lab"],
             "runbook run": ["runbook", "run", "cert-rotation", "--env", "lab", "--yes"],
             "lab up": ["lab", "up"], "lab down": ["lab", "down"]}
    return {name: _start(*argv, plan=plan_path) for name, argv in argvs.items()}


def _cli_refused(procs: dict[str, subprocess.Popen[str]], holder: Holder) -> None:
    """Each CLI contender: exit 2, one line on stderr naming the holder."""
    # Every contender ends before any is judged: one that got through (say `lab down`) must not
    # outlive this test and hold the lab against the next ones.
    finished = {name: _finish(proc, timeout=120) for name, proc in procs.items()}
    for name, (rc, out, err) in finished.items():
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1, (name, rc, out[-500:], err[-1500:])
        assert holder.describe() in lines[0] and "nothing was changed" in lines[0], lines[0]


def _moment(lab: Any, run_id: str) -> str:
    """Where the drill is, from its progress journal: before, during or after the clock."""
    try:
        data = json.loads((lab.state_dir / "runs" / f"{run_id}-region-failover" /
                           "progress.json").read_text())
    except (OSError, ValueError):
        return "starting"
    if not data.get("clock_started_at"):
        return "before"
    done = {p["name"] for p in data.get("phases") or [] if p.get("status") == "ok"}
    return "after" if "smoke" in done else "during"


def _healthy(lab: Any) -> None:
    st = lab.status()
    assert st.up and st.active_region == lab.primary_region and st.drift is None, \
        [(c.name, c.detail) for c in st.components if not c.healthy]
    assert st.busy is None


def test_drill_first_every_other_command_is_refused_before_during_and_after_the_clock(
        lab: Any, plan_path: Path) -> None:
    from drkit.config import load_plan

    plan = load_plan(plan_path)
    contenders = _contenders(plan)
    # A `lab up` killed with SIGKILL while it holds the lab: the drill takes over its lock.
    up = _start("lab", "up", "-q", plan=plan_path)
    dead = _wait_holder(lab, up, "lab up")
    os.kill(up.pid, signal.SIGKILL)
    up.wait()
    drill = _start("drill", "run", "region-failover", "--env", "lab", "--json", plan=plan_path)
    holder = _wait_holder(lab, drill, "drill run region-failover")
    assert holder.run_id
    seen: list[str] = []
    cli: dict[str, subprocess.Popen[str]] = {}
    try:
        for moment in ("before", "during", "after"):
            if not wait_until(lambda m=moment: _moment(lab, holder.run_id) == m or
                              drill.poll() is not None, timeout=300, interval=0.02):
                pytest.fail(f"the drill never reached the moment {moment!r} of its clock")
            if drill.poll() is not None:
                break
            _all_refused(contenders, holder)
            if _moment(lab, holder.run_id) == moment:  # still there after every contender
                seen.append(moment)
            if moment == "before":
                # The CLI round starts while the whole recovery and failback are still ahead:
                # four processes starting on a loaded machine take seconds, and a drill that
                # ended meanwhile would let `lab down` through (seen once when it ran "after").
                cli = _cli_start(plan_path)
        _cli_refused(cli, holder)
        rc, out, err = _finish(drill)
    finally:
        for proc in cli.values():
            if proc.poll() is None:
                proc.wait(timeout=300)
        if drill.poll() is None:
            drill.send_signal(signal.SIGINT)  # its rollback restores service
            drill.wait(timeout=300)
    assert seen == ["before", "during", "after"], seen
    result = json.loads(out)
    assert rc == 0 and result["verdict"] == "pass", (rc, result.get("reasons"), err[-2000:])
    assert f"took over the lock of environment 'lab' left by {dead.describe()}" in err
    record = plan_path.parent / "evidence" / "artifacts" / result["evidence"]["id"]
    lock = json.loads((record / "summary.json").read_text())["governance"]["lock"]
    assert lock["holder"]["pid"] == drill.pid and lock["holder"]["run_id"] == holder.run_id
    assert lock["took_over"]["command"] == "lab up" and lock["took_over"]["pid"] == up.pid
    _healthy(lab)


def _skipped_by_scheduler(plan_path: Path, holder: Holder) -> None:
    """A scheduled drill finds the lab busy: it skips (exit 0), naming the holder."""
    proc = subprocess.run([DRKIT, "drill", "run", "region-failover", "--env", "lab", "--json",
                           "--skip-if-busy", "--plan", str(plan_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["verdict"] == "skipped" and holder.describe() in out["reasons"][0], out


def test_lab_up_first_every_other_command_is_refused(lab: Any, plan_path: Path) -> None:
    from drkit.config import load_plan

    contenders = _contenders(load_plan(plan_path))
    proc = _start("lab", "up", "--json", plan=plan_path)
    try:
        holder = _wait_holder(lab, proc, "lab up")
        _all_refused(contenders, holder)
        _skipped_by_scheduler(plan_path, holder)
        rc, out, err = _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 0 and json.loads(out)["up"] is True, (out[-2000:], err[-2000:])
    _healthy(lab)


def test_runbook_first_in_a_forced_freeze_after_a_killed_drill(
        lab: Any, plan_path: Path, tmp_path: Path) -> None:
    """A drill killed half way leaves the lab "in a drill": under the plan's change freeze a
    runbook is refused until forced with a reason. The forced runbook takes over the dead
    drill's lock (its evidence says so, with the reason) and, while it runs, every other
    changing command is refused naming it."""
    from drkit.config import load_plan

    contenders = _contenders(load_plan(plan_path))  # a plan without the freeze
    (tmp_path / "frozen").mkdir()
    frozen = make_plan(tmp_path / "frozen", lambda d: d.update(
        change_freeze={"during_drills": True, "after_drill": "1s"}))
    # A drill command that held the lab and was killed with SIGKILL (before it broke anything:
    # the lock and its drill mark are what this test is about, not a second full drill).
    code = ("import sys, time; from pathlib import Path; from drkit import envlock\n"
            f"with envlock.hold(Path({str(lab.state_dir)!r}), 'lab', 'drill run region-failover',"
            " key='lab', run_id='KILLED-1', drill=True):\n"
            "    print('held', flush=True); time.sleep(300)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    st = subprocess.run([DRKIT, "lab", "status", "--plan", str(frozen)], capture_output=True,
                        text=True, timeout=60)
    assert "`drkit drill run region-failover` (run KILLED-1) died half way: `drkit drill " \
           "recover --env lab`" in st.stdout, st.stdout
    args = ["runbook", "run", "cert-rotation", "--env", "lab", "--yes", "--json"]
    refused = subprocess.run([DRKIT, *args, "--plan", str(frozen)], capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 2, (refused.stdout[-1000:], refused.stderr[-1000:])
    assert "frozen around a drill" in refused.stderr and "KILLED-1" in refused.stderr
    assert "--force-during-drill REASON" in refused.stderr
    proc = _start(*args, "--force-during-drill", "CHG-77 certificate leaked", plan=frozen)
    try:
        holder = _wait_holder(lab, proc, "runbook run cert-rotation")
        _all_refused(contenders, holder)
        _skipped_by_scheduler(plan_path, holder)
        rc, out, err = _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 0, (out[-2000:], err[-2000:])
    result = json.loads(out)
    assert result["verdict"] == "pass" and result["evidence"]
    assert "took over the lock of environment 'lab'" in err and "KILLED-1" in err
    record = frozen.parent / "evidence" / "artifacts" / result["evidence"]["id"]
    gov = json.loads((record / "summary.json").read_text())["governance"]
    assert gov["lock"]["holder"]["pid"] == proc.pid
    assert gov["lock"]["took_over"]["run_id"] == "KILLED-1"
    assert gov["lock"]["took_over"]["pid"] == child.pid
    assert gov["change_freeze"]["in_freeze"] and "KILLED-1" in gov["change_freeze"]["why"]
    assert gov["change_freeze"]["forced"]["reason"] == "CHG-77 certificate leaked"
    # Only a drill command ends the drill (the next test's `drill recover` does).
    mark = envlock.drill_mark(lab.state_dir, "lab")
    assert mark is not None and mark.unfinished
    _healthy(lab)


def test_a_half_recovered_lab_is_sent_to_drill_recover_and_recover_repairs_it(
        lab: Any, plan_path: Path) -> None:
    """The issue's state: HAProxy sends traffic to the secondary region while the databases
    are back in place. `lab status` and `lab up` name `drkit drill recover`, which fixes it."""
    from drkit.lab._runtime import runtime

    hp = lab.state_dir / "haproxy"
    runtime.haproxy_command(str(hp / "admin.sock"),
                            f"set map {hp / 'active.map'} active {lab.secondary_region}")
    st = subprocess.run([DRKIT, "lab", "status", "--plan", str(plan_path)], capture_output=True,
                        text=True, timeout=60)
    assert st.returncode == 1, st.stdout
    last = st.stdout.strip().splitlines()[-1]
    assert "half recovered" in last and "`drkit drill recover --env lab`" in last, last
    up = subprocess.run([DRKIT, "lab", "up", "--plan", str(plan_path)], capture_output=True,
                        text=True, timeout=300)
    assert up.returncode == 3 and "`drkit drill recover --env lab`" in up.stderr, up.stderr
    assert "lab up` again" not in up.stderr and len(up.stderr.strip().splitlines()) == 1
    rec = subprocess.run([DRKIT, "drill", "recover", "--env", "lab", "--plan", str(plan_path)],
                         capture_output=True, text=True, timeout=300)
    assert rec.returncode == 0, (rec.stdout[-2000:], rec.stderr[-2000:])
    after = subprocess.run([DRKIT, "lab", "status", "--plan", str(plan_path)],
                           capture_output=True, text=True, timeout=60)
    assert after.returncode == 0 and after.stdout.strip().endswith("lab is up"), after.stdout
    mark = envlock.drill_mark(lab.state_dir, "lab")
    assert mark is None or not mark.unfinished  # recover ended any drill left unfinished
    _healthy(lab)


# The lab is down afterwards: run it after the session's other lab tests.
@pytest.mark.lab_last
def test_lab_down_first_refuses_the_others_and_leaves_no_lab_process_nor_port(
        lab: Any, plan_path: Path) -> None:
    """Last: it takes the session's lab down (the next test's fixture brings it back)."""
    from drkit import lab as labmod
    from drkit.config import load_plan
    from drkit.lab._runtime import runtime

    plan = load_plan(plan_path)
    cfg = labmod.config(plan)
    contenders = _contenders(plan)
    # The lab loses track of a process it started (as when two commands interleaved and one
    # overwrote the other's pid file): a pid file gone, its process still serving.
    svc = labmod.services(cfg)[-1]
    lost = int(Path(svc["pidfile"]).read_text().split()[0])
    for suffix in ("", ".meta"):
        Path(svc["pidfile"] + suffix).unlink()
    st = lab.status()
    assert lost in st.untracked and runtime.port_listening(svc["port"])
    before = set(labmod.marked_pids(cfg))
    assert lost in before and set(st.pids) <= before
    proc = _start("lab", "down", "--json", plan=plan_path)
    try:
        holder = _wait_holder(lab, proc, "lab down")
        _all_refused(contenders, holder)
        rc, out, err = _finish(proc, timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 0, (out[-2000:], err[-2000:])
    result = json.loads(out)
    assert lost in result["stopped_pids"] and re.search(
        rf"also stopped \d+ lab process\(es\) no pid file named: .*\b{lost}\b",
        result["message"]), result["message"]
    assert labmod.marked_pids(cfg) == []
    assert [p for p in before if runtime.pid_alive(p)] == []
    assert [p for p in cfg.ports.values() if runtime.port_listening(p)] == []

