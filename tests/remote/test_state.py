"""The shared run state against a real moto server (issue 18): one lease per environment taken
with conditional writes, a fencing token that only grows, a stale holder refused before it
writes, the journal and the result where another controller reads them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from drkit.config import load_plan
from drkit.errors import PlanError
from drkit.state import LeaseHeld, LeaseLost, open_state, state_from

from .conftest import STATE_REGION


class Clock:
    """A controller's wall clock, moved by the test (expiry without sleeping)."""

    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_two_controllers_racing_exactly_one_gets_the_lease(state_bucket):
    # Two separate processes, started together, each trying to take the lease of `prod`.
    script = textwrap.dedent(f"""
        import sys, time
        from drkit.state import state_from, LeaseHeld
        s = state_from({state_bucket!r}, region={STATE_REGION!r})
        start = float(sys.argv[2])
        while time.time() < start:
            time.sleep(0.001)
        try:
            lease = s.acquire("prod", "drill run region-failover", run_id=sys.argv[1], ttl=60)
            print("GOT", lease.token)
        except LeaseHeld as e:
            print("REFUSED", e)
    """)
    import time

    start = str(time.time() + 3)
    procs = [subprocess.Popen([sys.executable, "-c", script, f"run-{i}", start],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=os.environ.copy()) for i in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    lines = [o[0].strip() for o in outs]
    assert all(p.returncode == 0 for p in procs), outs
    got = [line for line in lines if line.startswith("GOT")]
    refused = [line for line in lines if line.startswith("REFUSED")]
    assert len(got) == 1 and len(refused) == 1, lines
    assert got[0] == "GOT 1"
    winner = "run-0" if lines[0].startswith("GOT") else "run-1"
    # The refusal names the holder: its command, run id, fencing token.
    assert f"`drkit drill run region-failover` (run {winner})" in refused[0]
    assert "fencing token 1" in refused[0] and "another controller holds environment 'prod'" \
        in refused[0]
    held = state_from(state_bucket, region=STATE_REGION).lease("prod")
    assert held is not None and held.run_id == winner and held.token == 1


def test_a_stale_holder_cannot_write_after_another_took_over(state_bucket):
    clock_a, clock_b = Clock(), Clock()
    a = state_from(state_bucket, region=STATE_REGION, clock=clock_a)
    b = state_from(state_bucket, region=STATE_REGION, clock=clock_b)
    lease_a = a.acquire("prod", "drill run region-failover", run_id="run-a", ttl=30)
    assert lease_a.append("phase", {"name": "preflight"}) == 1
    # While A's lease runs, B is refused.
    clock_b.t += 29
    with pytest.raises(LeaseHeld, match="run run-a"):
        b.acquire("prod", "drill run region-failover", run_id="run-b", ttl=30)
    # A stops renewing (a paused or partitioned controller); its lease expires; B takes over.
    clock_b.t += 2
    lease_b = b.acquire("prod", "drill run region-failover", run_id="run-b", ttl=30)
    assert lease_b.token == 2 and lease_b.took_over is not None and \
        lease_b.took_over.run_id == "run-a"
    # A wakes up: every write is refused, naming the new holder, and nothing reaches the store.
    with pytest.raises(LeaseLost, match=r"now held by `drkit drill run region-failover` \(run "
                       r"run-b\).*fencing token 2"):
        lease_a.append("phase", {"name": "inject-fault"})
    with pytest.raises(LeaseLost):
        lease_a.finish({"verdict": "pass"})
    with pytest.raises(LeaseLost):
        lease_a.renew()
    assert [e.data for e in a.journal("run-a")] == [{"name": "preflight"}]
    assert a.result("run-a") is None
    # The new holder writes; its token is on what it wrote.
    lease_b.append("phase", {"name": "preflight"})
    lease_b.finish({"verdict": "pass", "exit_code": 0})
    assert [(e.token, e.data["name"]) for e in b.journal("run-b")] == [(2, "preflight")]
    with pytest.raises(LeaseLost):
        lease_a.put_artifact("recovery/stdout", b"stale")
    lease_b.put_artifact("recovery/stdout", b"PLAY RECAP")
    assert b.artifacts("run-b") == ["recovery/stdout"] and a.artifacts("run-a") == []
    assert b.artifact("run-b", "recovery/stdout") == b"PLAY RECAP"
    assert b.result("run-b")["token"] == 2
    # Release keeps the token: the next holder gets 3 (tokens only grow).
    lease_b.release()
    assert b.lease("prod").released
    assert b.acquire("prod", "runbook run patch", run_id=None, ttl=30).token == 3


def test_a_holder_that_cannot_renew_loses_its_lease_when_it_runs_out(state_bucket):
    """check(): a backend that cannot be reached is no loss while the lease has time left
    (nobody can take a live lease); once it ran out, the holder must assume it lost it (another
    controller may hold it), and its on_lost callbacks hear so once."""
    from drkit.errors import EnvironmentProblem

    clock = Clock()
    s = state_from(state_bucket, region=STATE_REGION, clock=clock)
    lease = s.acquire("dr", "drill run region-failover", run_id="r", ttl=60)
    heard: list[str] = []
    lease.on_lost(lambda e: heard.append(str(e)))
    real = s.blobs.replace

    def unreachable(*a, **k):
        raise EnvironmentProblem("shared state: cannot write envs/dr/lease.json: timeout")

    s.blobs.replace = unreachable  # type: ignore[method-assign]
    clock.t += 40
    lease.check()  # 20 s left: still ours
    assert lease.lost is None and heard == []
    clock.t += 19
    with pytest.raises(LeaseLost, match="ran out: it could not be renewed"):
        lease.check()
    s.blobs.replace = real  # type: ignore[method-assign]
    # The backend is back, but the holder stays out (its later writes are refused too).
    with pytest.raises(LeaseLost):
        lease.append("phase", {"name": "smoke"})
    assert len(heard) == 1 and "ran out" in heard[0]
    # A holder that learns of a takeover from a check hears it the same way.
    clock.t += 2
    b = s.acquire("dr", "drill recover", run_id=None, ttl=60)
    clock.t += 61  # b paused past its lease; c takes the environment
    c = state_from(state_bucket, region=STATE_REGION, clock=Clock(clock.t))
    c.acquire("dr", "drill run region-failover", run_id="r3", ttl=60)
    told: list[LeaseLost] = []
    b.on_lost(told.append)
    with pytest.raises(LeaseLost, match="fencing token 3"):
        b.check()
    assert len(told) == 1


def test_renewal_keeps_a_lease_and_release_frees_it(state_bucket):
    clock = Clock()
    s = state_from(state_bucket, region=STATE_REGION, clock=clock)
    lease = s.acquire("stage", "drill run region-failover", run_id="r1", ttl=10)
    for _ in range(5):  # 5 x 8s > 10s: alive only because each renewal moved its expiry
        clock.t += 8
        lease.renew()
    assert [r.run_id for r in s.running()] == ["r1"]
    other = state_from(state_bucket, region=STATE_REGION, clock=clock)
    with pytest.raises(LeaseHeld):
        other.acquire("stage", "drill run region-failover", run_id="r2", ttl=10)
    lease.release()
    assert s.running() == []
    assert other.acquire("stage", "drill run x", run_id="r2", ttl=10).token == 2


def test_background_renewal_races_with_writes(state_bucket):
    # The renewer thread and the run's writes both replace the lease: neither may fence the
    # other out (they share the holder's ETag under one lock).
    s = state_from(state_bucket, region=STATE_REGION)
    lease = s.acquire("race", "drill run x", run_id="r", ttl=5)
    lease.start_renewing(every=0.01)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for i in range(15):
                lease.append("note", {"i": i})
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=write)
    t.start()
    t.join(60)
    lease.release()
    assert not errors, errors
    assert [e.data["i"] for e in s.journal("r")] == list(range(15))


def test_an_unreachable_or_missing_bucket_is_one_clear_line(state_bucket):
    s = state_from("s3://no-such-bucket-h18/x", region=STATE_REGION)
    with pytest.raises(Exception, match=r"shared state s3://no-such-bucket-h18/x: cannot read "
                       r"envs/prod/lease.json: NoSuchBucket; create the bucket"):
        s.acquire("prod", "drill run x", run_id="r", ttl=10)


PLAN = """\
version: 1
regions: {primary: eu-west-1, secondary: eu-central-1}
environments:
  prod:
    inventory: inventory.ini
    state: {s3: "STATE", region: REGION, lease: 2m}
    execution_nodes:
      eu-central-1: {host: 10.0.0.12, user: drkit, identity_file: keys/node,
                     python: /opt/drkit/bin/python, ssh_options: [StrictHostKeyChecking=yes]}
services:
  payments: {tier: 1, rto: 5m, rpo: 0s}
scenarios:
  region-failover:
    services: [payments]
    phases:
      - {name: smoke, playbook: smoke.yml, starts_clock: true, stops_clock: true}
"""


def _plan(tmp_path: Path, text: str):
    (tmp_path / "inventory.ini").write_text("localhost ansible_connection=local\n")
    (tmp_path / "smoke.yml").write_text("- name: smoke\n  hosts: all\n  tasks: []\n")
    (tmp_path / "drkit.yml").write_text(text)
    return load_plan(tmp_path / "drkit.yml")


def test_the_plan_names_the_state_and_the_nodes(state_bucket, tmp_path):
    plan = _plan(tmp_path, PLAN.replace("STATE", state_bucket).replace("REGION", STATE_REGION))
    env = plan.environment("prod")
    assert env.state is not None and env.state.lease == 120
    assert env.execution_nodes["eu-central-1"].python == "/opt/drkit/bin/python"
    state = open_state(plan, "prod")
    assert state is not None
    lease = state.acquire("prod", "drill run region-failover", run_id="p1", ttl=env.state.lease)
    assert state.lease("prod").token == lease.token == 1


@pytest.mark.parametrize("edit,message", [
    (("REGION", "eu-west-1"), r"drkit.yml .*environments.prod.state.region: 'eu-west-1' is "
                              r"a region a drill fails over; keep the shared state in another"),
    (("STATE", "bucket/x"), r"'bucket/x' is not an S3 location \(use s3://bucket/prefix\)"),
    (("2m", "1s"), r"'1s' must be between 5s and 1d"),
    (("eu-central-1: {host", "us-east-2: {host"), r"'us-east-2' is not the plan's primary or "
                                                  r"secondary region"),
    (("user: drkit", "user: '-oProxyCommand=x'"), r"is not a user name"),
    (("StrictHostKeyChecking=yes", "-oProxyCommand"), r"is not an ssh option like Name=value"),
])
def test_a_bad_state_or_node_is_a_plan_error(tmp_path, edit, message):
    text = PLAN.replace(*edit).replace("STATE", "s3://b/p").replace("REGION", "eu-north-1")
    with pytest.raises(PlanError, match=message):
        _plan(tmp_path, text)
