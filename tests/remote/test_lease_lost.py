"""A driver that loses its lease stops acting (issue 18).

A real `drkit drill run` (the driver, here on this machine) holds the environment's lease in the
shared state (a real moto server). While its `hold` phase runs, the lease is expired in the
bucket (what a paused or cut-off holder's lease does) and a second controller takes it (fencing
token 2). The first driver must then start no further phase, roll nothing back (the environment
is the new holder's), write nothing more to the shared state, and say that it lost its lease
(aborted, never pass); the new holder writes on. Everything is read from what the runs left:
the drill's JSON, its run folder's job events, marker files the playbooks write, the bucket.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import yaml

from drkit.state import Conflict, LeaseRecord, state_from

from .conftest import STATE_REGION

DRKIT = str(Path(sys.executable).parent / "drkit")


def _play(name: str, task: str) -> str:
    return (f"- name: {name}\n  hosts: all\n  gather_facts: false\n  tasks:\n"
            f"    - name: {name} step\n{task}")


def _marker(path: Path) -> str:
    return (f"      ansible.builtin.command: touch {path}\n"
            "      changed_when: true\n")


def _plan(root: Path, bucket_url: str, endpoint: str, lease: str = "60s") -> Path:
    from drkit.evidence import generate_keypair

    m = root / "markers"
    m.mkdir()
    books = {
        "preflight": _play("Preflight", _marker(m / "preflight")),
        "inject": _play("Inject", _marker(m / "inject")),
        # Ends when the test says so: the window in which the lease changes hands.
        "hold": _play("Hold", f"      ansible.builtin.wait_for:\n        path: {root}/release\n"
                              "        timeout: 240\n"),
        "smoke": _play("Smoke", _marker(m / "smoke")),
        "failback": _play("Failback", _marker(m / "failback")),
        "rollback": _play("Rollback", _marker(m / "rollback")),
    }
    for name, text in books.items():
        (root / f"{name}.yml").write_text(text)
    (root / "inv.ini").write_text(
        f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    plan = {
        "version": 1,
        "regions": {"primary": "eu-west-1", "secondary": "eu-central-1"},
        "environments": {"prod": {
            "inventory": "inv.ini",
            # A long lease: the background renewal (every 20 s) need not be the one that
            # finds out; the check before the next phase must.
            "state": {"s3": bucket_url, "region": STATE_REGION, "endpoint_url": endpoint,
                      "lease": lease}}},
        "services": {"payments": {"tier": 1, "rto": "10m", "rpo": "0s"}},
        "scenarios": {"s": {"services": ["payments"], "rollback": "rollback.yml", "phases": [
            {"name": "preflight", "playbook": "preflight.yml"},
            {"name": "inject-fault", "playbook": "inject.yml", "starts_clock": True},
            {"name": "hold", "playbook": "hold.yml"},
            {"name": "smoke", "playbook": "smoke.yml", "stops_clock": True},
            {"name": "failback", "playbook": "failback.yml", "failback": True}]}},
        "evidence": {"store": "./evidence", "signing_key": "keys/evidence.key"},
    }
    (root / "drkit.yml").write_text(yaml.safe_dump(plan, sort_keys=False))
    generate_keypair(root / "keys" / "evidence.key")
    return root / "drkit.yml"


def _wait(what: str, check, timeout: float = 300.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the drill ended before {what}: {proc.communicate()}")
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_driver_that_lost_its_lease_starts_no_further_phase_and_cannot_write(
        state_bucket, moto_url, tmp_path):
    plan = _plan(tmp_path, state_bucket, moto_url)
    state = state_from(state_bucket, region=STATE_REGION, endpoint_url=moto_url)
    drill = subprocess.Popen([DRKIT, "drill", "run", "s", "-e", "prod", "-p", str(plan),
                              "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        first = _wait("the driver's lease", lambda: state.lease("prod"), proc=drill)
        run_id = first.run_id
        assert first.token == 1 and run_id
        _wait("phase hold to start", lambda: any(
            e.kind == "phase_started" and e.data.get("name") == "hold"
            for e in state.journal(run_id)), proc=drill)

        # The first holder's lease runs out in the bucket (as if it had been paused past its
        # expiry), and a second controller takes the environment: fencing token 2.
        key = "envs/prod/lease.json"
        while True:
            body, etag = state.blobs.get(key)  # type: ignore[misc]
            old = LeaseRecord.parse(body)
            expired = replace(old, expires_at=time.time() - 1)
            try:
                state.blobs.replace(key, expired.to_bytes(), etag)
                break
            except Conflict:  # the driver renewed meanwhile: expire its new lease
                continue
        taken_at = time.time()
        second = state_from(state_bucket, region=STATE_REGION, endpoint_url=moto_url)
        new = second.acquire("prod", "drill recover --scenario s", run_id=f"{run_id}-takeover",
                             ttl=60, operator="controller-2")
        assert new.token == 2 and new.took_over is not None and new.took_over.token == 1

        (tmp_path / "release").touch()  # the hold phase ends; the next would be smoke
        out, err = drill.communicate(timeout=300)
    finally:
        if drill.poll() is None:
            drill.kill()
            drill.wait()

    # The first driver stopped: aborted (exit 3), never pass, saying it lost its lease.
    result = json.loads(out)
    assert drill.returncode == 3 and result["verdict"] == "aborted", (out, err)
    phases = {p["name"]: (p["status"], p["message"]) for p in result["phases"]}
    assert phases["preflight"][0] == phases["inject-fault"][0] == "ok", phases
    assert phases["smoke"] == ("skipped", "not started: this driver lost its lease"), phases
    assert phases["failback"][0] == "skipped", phases
    assert "rollback" not in phases, phases
    said = " ".join(result["reasons"])
    assert "this driver lost its lease" in said and "fencing token 2" in said, said
    assert "it ran no rollback" in said, said
    # What ran, from the playbooks' own marks: nothing after hold, no rollback, no failback.
    ran = sorted(p.name for p in (tmp_path / "markers").iterdir())
    assert ran == ["inject", "preflight"], ran
    # ... and from ansible-runner's job events in the run folder: no phase's play after Hold;
    # the gate before smoke (where the driver proves its lease) held the run and never passed.
    run_dir = Path(result["artifacts_dir"])
    events = [json.loads(line) for f in sorted(run_dir.rglob("job_events.jsonl"))
              for line in f.read_text().splitlines()]
    plays = [e["event_data"]["play"] for e in events if e["event"] == "playbook_on_play_start"]
    assert [p for p in plays if not p.startswith("drkit lease gate")] == [
        "Preflight", "Inject", "Hold"], plays
    assert plays[-1] == "drkit lease gate before smoke", plays
    passed = [e["event_data"]["task"] for e in events if e["event"] == "runner_on_ok"]
    assert "The driver still holds its lease: hold may start" in passed, passed
    assert "The driver still holds its lease: smoke may start" not in passed, passed
    # The run's own summary (written locally) says so too.
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["verdict"] == "aborted"

    # The shared state: the first driver wrote nothing after the takeover, and no result.
    mine = [json.loads(state.blobs.get(k)[0])  # type: ignore[index]
            for k in state.blobs.list(f"runs/{run_id}/journal/")]
    assert mine and all(e["token"] == 1 for e in mine)
    assert all(e["at"] <= taken_at for e in mine), [e for e in mine if e["at"] > taken_at]
    assert not any(e["kind"] == "phase_started" and e["data"]["name"] == "smoke" for e in mine)
    assert state.result(run_id) is None
    assert state.artifacts(run_id) == []
    # The lease is still the new holder's (the stale driver's release was refused) ...
    now = state.lease("prod")
    assert now is not None and now.token == 2 and now.operator == "controller-2"
    assert not now.released
    # ... and the new holder proceeds: its writes go through.
    new.append("note", {"message": "taking over"})
    new.finish({"verdict": "recovered"})
    new.release()
    assert state.result(f"{run_id}-takeover")["token"] == 2  # type: ignore[index]

    # The first driver's evidence record is sealed as aborted and verifies.
    v = subprocess.run([DRKIT, "evidence", "verify", "-p", str(plan)], capture_output=True,
                       text=True, timeout=120)
    assert v.returncode == 0 and "intact: 1 records" in v.stdout, v.stdout + v.stderr
    shown = subprocess.run([DRKIT, "evidence", "show", result["evidence"]["id"], "-p", str(plan),
                            "--json"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and '"aborted"' in shown.stdout, shown.stdout + shown.stderr


def test_a_paused_driver_whose_lease_was_taken_over_acts_no_more(
        state_bucket, moto_url, tmp_path):
    """A real pause: the running driver is stopped (SIGSTOP) until its lease runs out; a second
    controller (its own folder, as on another machine: its own local lock and evidence) runs
    `drkit drill recover`, which takes the lease with fencing token 2, rolls back and releases
    it; then the driver resumes (SIGCONT). Its first fenced write is refused: it cancels the
    phase it was in, starts no further one, rolls nothing back, writes nothing more to the
    shared state, and says so in its outcome. The plan's short lease keeps the pause short."""
    plan = _plan(tmp_path, state_bucket, moto_url, lease="10s")
    other = tmp_path / "controller-2"
    other.mkdir()
    plan2 = _plan(other, state_bucket, moto_url, lease="10s")
    state = state_from(state_bucket, region=STATE_REGION, endpoint_url=moto_url)
    drill = subprocess.Popen([DRKIT, "drill", "run", "s", "-e", "prod", "-p", str(plan),
                              "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        run_id = _wait("the driver's lease", lambda: state.lease("prod"), proc=drill).run_id
        _wait("phase hold to start", lambda: any(
            e.kind == "phase_started" and e.data.get("name") == "hold"
            for e in state.journal(run_id)), proc=drill)
        os.kill(drill.pid, signal.SIGSTOP)
        try:
            _wait("the paused driver's lease to run out", lambda: not state.lease(
                "prod").live(time.time()), timeout=60)  # type: ignore[union-attr]
            taken_at = time.time()
            rec = subprocess.run([DRKIT, "drill", "recover", "-e", "prod", "-p", str(plan2)],
                                 capture_output=True, text=True, timeout=300)
        finally:
            os.kill(drill.pid, signal.SIGCONT)
        resumed_at = time.time()
        try:
            out, err = drill.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            (tmp_path / "release").touch()  # (its hold phase would wait for ever)
            raise AssertionError("the resumed driver went on as if it still held its lease: "
                                 + "".join(drill.communicate(timeout=120))) from None
    finally:
        if drill.poll() is None:
            drill.kill()
            drill.wait()

    # The second controller recovered the environment under token 2 and released the lease.
    assert rec.returncode == 3 and "prod: NOT serving payments" in rec.stdout, \
        rec.stdout + rec.stderr  # (no entry point declared: serving is not observed)
    assert (other / "markers" / "rollback").exists()
    now = state.lease("prod")
    assert now is not None and (now.token, now.released) == (2, True), now
    assert now.command == "drill recover --scenario s" and now.acquired_at >= taken_at

    # The paused driver: aborted (exit 3), its running phase cancelled, nothing after it.
    result = json.loads(out)
    assert drill.returncode == 3 and result["verdict"] == "aborted", (out, err)
    phases = {p["name"]: (p["status"], p["message"]) for p in result["phases"]}
    assert phases["preflight"][0] == phases["inject-fault"][0] == "ok", phases
    assert phases["hold"][0] == "canceled" and "lost its lease" in phases["hold"][1], phases
    assert phases["smoke"] == ("skipped", "not started: this driver lost its lease"), phases
    assert phases["failback"][0] == "skipped" and "rollback" not in phases, phases
    said = " ".join(result["reasons"])
    assert "this driver lost its lease" in said and "fencing token 2" in said, said
    assert "it ran no rollback" in said, said
    assert sorted(p.name for p in (tmp_path / "markers").iterdir()) == ["inject", "preflight"]
    events = [json.loads(line) for f in sorted(Path(result["artifacts_dir"]).rglob(
        "job_events.jsonl")) for line in f.read_text().splitlines()]
    plays = [e["event_data"]["play"] for e in events if e["event"] == "playbook_on_play_start"]
    assert [p for p in plays if not p.startswith("drkit lease gate")] == [
        "Preflight", "Inject", "Hold"], plays
    # The shared state holds nothing the paused driver wrote after it resumed: its journal
    # stops before the takeover, no result, no artifacts; the lease is not touched.
    mine = [json.loads(state.blobs.get(k)[0])  # type: ignore[index]
            for k in state.blobs.list(f"runs/{run_id}/journal/")]
    assert mine and all(e["token"] == 1 and e["at"] < taken_at < resumed_at for e in mine)
    assert state.result(run_id) is None and state.artifacts(run_id) == []
    assert state.lease("prod") == now
    # Its evidence record (its own store) is sealed as aborted and verifies.
    v = subprocess.run([DRKIT, "evidence", "verify", "-p", str(plan)], capture_output=True,
                       text=True, timeout=120)
    assert v.returncode == 0 and "intact: 1 records" in v.stdout, v.stdout + v.stderr
