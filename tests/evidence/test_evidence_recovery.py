"""Write-ahead: a run killed with SIGKILL still leaves a sealed "interrupted" record."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from drkit.evidence import Recorder, read_index, recover_interrupted, verify
from drkit.evidence.recorder import pid_start

from .conftest import T0, rewrite_open, seal_n


def _dead_pid() -> int:
    proc = subprocess.Popen(["sleep", "60"])
    proc.kill()
    proc.wait()
    return proc.pid


def test_open_record_of_a_dead_pid_is_sealed_interrupted(store, plan, keys, tmp_path):
    seal_n(store, plan, tmp_path, 2)
    rec = Recorder.open(store, kind="drill", name="region-failover", environment="lab",
                        plan=plan)
    rec.add_phase("preflight", status="ok", started_at=T0, ended_at=T0.replace(second=3))
    rec.add_phase("inject-fault", status="running", started_at=T0.replace(second=4),
                  counts_for_rto=True)
    # Make the open record look like another process's, one that was killed.
    path = store.root / "open" / f"{rec.id}.json"
    pid = _dead_pid()
    rewrite_open(path, plan, lambda doc: doc["writer"].update(pid=pid, pid_start=None))

    got = recover_interrupted(store, plan=plan)
    assert [r.id for r in got.sealed] == [rec.id]
    sealed = got.sealed[0]
    assert sealed.seq == 3 and sealed.verdict == "interrupted"
    assert [p.name for p in sealed.phases] == ["preflight", "inject-fault"]
    assert sealed.phases[1].status == "interrupted" and sealed.phases[1].ended_at
    assert any(f.check == "run-interrupted" for f in sealed.findings)
    assert not path.exists()
    assert verify(store, keys.public).ok
    assert recover_interrupted(store, plan=plan).sealed == ()  # nothing left to do


def test_live_writer_is_left_alone(store, plan, keys):
    rec = Recorder.open(store, kind="drill", name="region-failover", environment="lab",
                        plan=plan)
    got = recover_interrupted(store, plan=plan)
    assert got.sealed == () and got.left_open == (f"{rec.id}: running (pid {os.getpid()})",)
    rec.add_phase("preflight", status="ok", started_at=T0, ended_at=T0.replace(second=3))
    rec.seal("pass")
    assert verify(store, keys.public).ok


def test_reused_pid_counts_as_dead(store, plan):
    rec = Recorder.open(store, kind="runbook", name="patch", environment="lab", plan=plan)
    path = store.root / "open" / f"{rec.id}.json"
    other = (pid_start(os.getpid()) or 0) + 1  # same pid, other process
    rewrite_open(path, plan, lambda doc: doc["writer"].update(pid_start=other))
    assert [r.id for r in recover_interrupted(store, plan=plan).sealed] == [rec.id]


CHILD = """
import sys, time
from pathlib import Path
from drkit.config import load_plan
from drkit.evidence import LocalStore, Recorder
plan = load_plan(sys.argv[1])
rec = Recorder.open(LocalStore(Path(sys.argv[2])), kind="drill", name="region-failover",
                    environment="lab", plan=plan)
rec.add_phase("preflight", status="ok", started_at="2025-03-01T02:00:00Z",
              ended_at="2025-03-01T02:00:02Z")
rec.add_phase("inject-fault", status="running", started_at="2025-03-01T02:00:03Z",
              counts_for_rto=True)
print(rec.id, flush=True)
time.sleep(120)
"""


def test_sigkill_mid_run_leaves_an_interrupted_record(store, plan, keys, tmp_path):
    seal_n(store, plan, tmp_path, 1)
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(CHILD), str(plan.path),
                              str(store.root)], stdout=subprocess.PIPE, text=True)
    try:
        rid = child.stdout.readline().strip()
        assert rid, "the child did not open its record"
        assert recover_interrupted(store, plan=plan).sealed == ()  # still running
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    got = recover_interrupted(store, plan=plan)
    assert [r.id for r in got.sealed] == [rid]
    assert got.sealed[0].verdict == "interrupted" and got.sealed[0].seq == 2
    assert [e.verdict for e in read_index(store)] == ["pass", "interrupted"]
    report = verify(store, keys.public)
    assert report.ok, report.issues


def test_exception_in_block_seals_aborted(store, plan, keys):
    try:
        with Recorder.open(store, kind="drill", name="region-failover", environment="lab",
                           plan=plan) as rec:
            raise RuntimeError("promote failed")
    except RuntimeError:
        pass
    assert rec.sealed is not None and rec.sealed.verdict == "aborted"
    assert verify(store, keys.public).ok
