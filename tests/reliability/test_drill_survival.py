"""drkit survives its own failures, on the real lab (issue 7). Each kill point and each drill
under load is a test case of its own (issue 13), so one failure does not hide the others.

- A kill at every phase (test_kill_*): SIGKILL drkit when a phase starts, then `drkit drill
  recover`; and, separately, SIGKILL the ansible-playbook under it. After each: payments are
  served from the original primary with replication streaming, the lab is healthy, the evidence
  chain verifies, and a killed drkit's run (only that) is recorded as interrupted. The cases
  share one plan and evidence store, in order; the last test checks the whole chain and that
  the next drill passes.
- Sustained load (test_load_*): drills back to back under a steady stream of payments through
  the entry point: every drill passes, the ledger balances after each, no acknowledged payment
  is lost (synchronous replication); the last test stops the load and checks the ledger.
  DRKIT_RELIABILITY_DRILLS sets how many (default 20).

When every case of a part passed, its figures are saved (tests/reliability/report.py) for
`bench/reliability.py` to write into RELIABILITY.md; the tests write nothing tracked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.drills import DRKIT, drill, make_plan, serving

pytestmark = pytest.mark.lab

PHASES = ["preflight", "inject-fault", "recreate-stack", "promote-data", "failover-traffic",
          "smoke", "failback"]
# Killing the ansible-playbook under preflight proves nothing: nothing is broken yet, the drill
# just ends. So 7 phases with drkit killed and 6 with its Ansible killed: 13 kill points.
KILL_POINTS = [(phase, what) for phase in PHASES for what in ("drkit", "ansible")
               if not (what == "ansible" and phase == "preflight")]
DRILLS = int(os.environ.get("DRKIT_RELIABILITY_DRILLS", "20"))
LOAD_RATE_PER_S = 20


def _descendants(root: int) -> list[tuple[int, str]]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [root]
    while todo:
        for pid in kids.get(todo.pop(), []):
            try:
                cmd = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            out.append((pid, cmd.decode(errors="replace")))
            todo.append(pid)
    return out


def _kill_ansible_under(pid: int, phase: str) -> bool:
    """SIGKILL the real ansible-playbook (not drkit's shim) below `pid` that runs `phase`: the
    recovery run's, or failback's (issue 19: failback's run is started ahead, beside it)."""
    run = "/failback.yml" if phase == "failback" else "/recovery.yml"
    for child, cmd in _descendants(pid):
        if ".venv/bin/ansible-playbook" in cmd and " -S " not in cmd and run in cmd:
            os.kill(child, signal.SIGKILL)
            return True
    return False


def _private_dirs_of(pid: int) -> list[Path]:
    """The engine's private run folders (env/extravars, the whole environment) of process
    `pid`, by their owner mark."""
    from drkit.engine import OWNER_FILE, PRIVATE_PREFIX

    found = []
    for d in Path(tempfile.gettempdir()).glob(f"{PRIVATE_PREFIX}*"):
        try:
            if (d / OWNER_FILE).read_text().split()[0] == str(pid):
                found.append(d)
        except (OSError, IndexError):
            continue
    return found


def _run_and_kill(plan: Path, phase: str, what: str) -> tuple[int, str, list[Path]]:
    proc = subprocess.Popen(
        [DRKIT, "drill", "run", "region-failover", "--env", "lab", "--json", "--plan", str(plan)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if f"{phase}: started" in line:
            time.sleep(0.3)  # into the phase's first task
            if what == "drkit":
                deadline = time.monotonic() + 10
                while not (left := _private_dirs_of(proc.pid)) and time.monotonic() < deadline:
                    time.sleep(0.05)  # the running phase's, once the engine made it
                proc.send_signal(signal.SIGKILL)
            else:
                assert _kill_ansible_under(proc.pid, phase), "no ansible-playbook found"
            break
    else:
        raise AssertionError(f"phase {phase} never started:\n{''.join(seen)}")
    proc.communicate(timeout=600)
    return proc.returncode, "".join(seen), left if what == "drkit" else []


def _recover(plan: Path) -> dict[str, Any]:
    rec = subprocess.run([DRKIT, "drill", "recover", "--env", "lab", "--json", "--plan",
                          str(plan)], capture_output=True, text=True, timeout=600)
    out = json.loads(rec.stdout)
    assert rec.returncode == 0, (out, rec.stderr[-2000:])
    return out


def _verify(plan: Path, tmp: Path) -> None:
    verify = subprocess.run([DRKIT, "evidence", "verify", "--plan", str(plan), "--public-key",
                             str(tmp / "keys" / "evidence.pub")], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def _records(plan: Path) -> list[dict[str, Any]]:
    res = subprocess.run([DRKIT, "evidence", "list", "--json", "--plan", str(plan)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    records = json.loads(res.stdout)
    return list(records.get("records", records) if isinstance(records, dict) else records)


def _interrupted(plan: Path) -> int:
    return sum(1 for r in _records(plan) if r["verdict"] == "interrupted")


def _healthy_on_primary(lab: Any) -> None:
    """Not repaired, observed: every lab component up and traffic on the original primary (so
    the next case's `lab` fixture has nothing to repair after a case that passed)."""
    st = lab.status()
    assert st.up and st.active_region == lab.primary_region, st


# ---------------------------------------------------------------- a kill at every phase


@dataclass
class KillRun:
    """The kill cases' shared plan and evidence store, and what they did so far."""

    plan: Path
    tmp: Path
    tried: list[str] = field(default_factory=list)
    drkit_killed: int = 0
    interrupted: int | None = None  # records sealed as interrupted after the last case passed


@pytest.fixture(scope="module")
def kill_run(tmp_path_factory: pytest.TempPathFactory) -> KillRun:
    tmp = tmp_path_factory.mktemp("kill")
    return KillRun(plan=make_plan(tmp), tmp=tmp)


@pytest.mark.parametrize(("phase", "what"), KILL_POINTS,
                         ids=[f"{phase}-{what}" for phase, what in KILL_POINTS])
def test_kill_point_is_recovered(lab: Any, kill_run: KillRun, phase: str, what: str) -> None:
    plan = kill_run.plan
    before = kill_run.interrupted
    kill_run.interrupted = None  # unknown until this case passes
    if before is None:  # the first case, or the one before failed half way
        before = _interrupted(plan)
    rc, log, left = _run_and_kill(plan, phase, what)
    if what == "drkit":
        kill_run.drkit_killed += 1
        assert rc == -signal.SIGKILL, log
        # A drkit killed mid-phase leaves its private run folder (issue 15) ...
        assert left and all(d.is_dir() for d in left), log
    else:
        assert rc == 3, log  # drkit saw its Ansible die: aborted, rolled back
    out = _recover(plan)
    assert out["serving"] and out["replication"] == "streaming", out
    assert out["active_region"] == lab.primary_region, out
    if what == "drkit":
        assert len(out["sealed_interrupted"]) == 1, out
        # ... and drill recover removes it.
        assert not any(d.exists() for d in left), (left, out)
    assert serving(lab)
    _healthy_on_primary(lab)
    _verify(plan, kill_run.tmp)
    # Only a killed drkit leaves a run to seal as interrupted; an aborted one sealed its own.
    after = _interrupted(plan)
    assert after == before + (1 if what == "drkit" else 0)
    kill_run.interrupted = after
    kill_run.tried.append(f"{phase} ({what})")


def test_kill_points_leave_a_verified_chain_and_a_passing_drill(lab: Any, kill_run: KillRun,
                                                                figures: Any) -> None:
    plan = kill_run.plan
    _verify(plan, kill_run.tmp)
    assert _interrupted(plan) == kill_run.drkit_killed
    rc, out, err = drill(plan)
    assert rc == 0, (out["reasons"], err[-2000:])
    if len(kill_run.tried) == len(KILL_POINTS):  # every kill point passed in this session
        assert kill_run.drkit_killed == len(PHASES)
        figures.part("kill").update(tried=kill_run.tried, interrupted=kill_run.drkit_killed,
                                    rto_s=out["rto"]["actual_s"])


# ---------------------------------------------------------------- sustained drills under load


@dataclass
class LoadRun:
    """The load cases' shared plan, the load generator running under all of them, totals."""

    plan: Path
    load: Any  # drkit.flows.LoadGenerator
    rtos: list[float] = field(default_factory=list)
    lost: int = 0
    acked: int = 0


@pytest.fixture(scope="module")
def load_run(lab_session: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadRun]:
    from drkit import flows

    lab_session.ensure_up()
    plan = make_plan(tmp_path_factory.mktemp("load"))
    load = flows.LoadGenerator(lab_session.entry_url, str(lab_session.ca_file),
                               rate_per_s=LOAD_RATE_PER_S, mode="write",
                               run_id=f"load-{time.time_ns()}", token=lab_session.token)
    load.start()
    try:
        yield LoadRun(plan=plan, load=load)
    finally:
        load.stop()


@pytest.mark.parametrize("n", range(1, DRILLS + 1), ids=lambda n: f"drill-{n:02d}")
def test_load_drill_passes(lab: Any, load_run: LoadRun, n: int) -> None:
    rc, out, err = drill(load_run.plan)
    assert rc == 0, (n, out["reasons"], err[-2000:])
    rec = out["reconciliation"]
    assert rec["ledger"]["balanced"], (n, rec)
    assert (out["after_failback"] or {}).get("lost_count", 0) == 0
    assert out["rpo"]["lost_payments"] == 0, (n, out["rpo"])
    _healthy_on_primary(lab)
    load_run.rtos.append(out["rto"]["actual_s"])
    load_run.lost += out["rpo"]["lost_payments"]
    load_run.acked += rec["acked_count"]


def test_load_left_a_balanced_ledger_and_lost_nothing(lab_session: Any, load_run: LoadRun,
                                                      figures: Any) -> None:
    # lab_session, not lab: a repair (down + up) here would check a fresh, empty ledger.
    stats = load_run.load.stop()
    status, ledger = lab_session.https_get("/ledger/verify")
    assert status == 200 and ledger["balanced"], ledger
    assert load_run.lost == 0
    if len(load_run.rtos) == DRILLS:  # every drill passed in this session
        figures.part("load").update(rtos=load_run.rtos, lost=load_run.lost,
                                    acked=load_run.acked, rate_per_s=LOAD_RATE_PER_S,
                                    load_ok=stats.ok, load_failed=stats.failed)
