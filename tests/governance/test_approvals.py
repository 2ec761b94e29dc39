"""Four-eyes approvals on real files: self-approval, once-only use, expiry, races."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
import threading
from datetime import UTC, datetime, timedelta

import pytest

from drkit.config import Plan
from drkit.errors import BadInput
from drkit.governance import approvals
from drkit.governance.approvals import RequestStatus

from .conftest import PLAN, write_plan

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def approved(plan: Plan, *, expires_in: float | None = None, env: str = "prod",
             scenario: str = "region-failover") -> approvals.Request:
    req = approvals.request(plan, scenario, env, "quarterly DR test CHG-1234", operator="alice",
                            now=T0)
    return approvals.approve(plan, req.id, operator="bob", expires_in=expires_in,
                             now=T0 + timedelta(minutes=5))


def test_the_plan_says_what_needs_approval(plan):
    assert approvals.needs_approval(plan, "region-failover", "prod")      # environment
    assert approvals.needs_approval(plan, "cert-drill", "lab")            # scenario
    assert not approvals.needs_approval(plan, "region-failover", "lab")
    assert approvals.require(plan, "region-failover", "lab", None, operator="carol") is None
    with pytest.raises(BadInput, match=r"'region-failover' in environment 'prod' needs an "
                       r"approved request \(drkit drill request region-failover --env prod"):
        approvals.require(plan, "region-failover", "prod", None, operator="carol")


def test_request_is_stored_beside_the_evidence_privately(plan):
    req = approvals.request(plan, "region-failover", "prod", "CHG-1", operator="alice", now=T0)
    path = plan.root / "evidence" / "requests" / f"{req.id}.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    data = json.loads(path.read_text())
    assert data["requested_by"] == "alice" and data["status"] == "pending"
    assert data["requested_at"] == "2026-03-02T09:00:00Z" and data["plan_sha256"] == plan.sha256
    assert approvals.get(plan, req.id[:-2]) == req  # a unique prefix is enough
    with pytest.raises(BadInput, match="unknown scenario 'nope'"):
        approvals.request(plan, "nope", "prod", "x", operator="alice")
    with pytest.raises(BadInput, match="needs a reason"):
        approvals.request(plan, "region-failover", "prod", "  ", operator="alice")


def test_the_requester_cannot_approve_their_own_request(plan):
    req = approvals.request(plan, "region-failover", "prod", "CHG-1", operator="alice")
    for me in ("alice", " Alice "):
        with pytest.raises(BadInput, match=r"the requester cannot approve their own request "
                           r"\(requested by alice"):
            approvals.approve(plan, req.id, operator=me)
    assert approvals.get(plan, req.id).status() == RequestStatus.PENDING


def test_approved_request_is_consumed_once_and_only_once(plan):
    req = approved(plan, expires_in=3600)
    assert req.approved_by == "bob" and req.expires_at == T0 + timedelta(minutes=65)
    used = approvals.consume(plan, req.id, "region-failover", "prod", operator="carol",
                             now=T0 + timedelta(minutes=10), run_id="run-1")
    assert used.status() == RequestStatus.USED and used.used_by == "carol"
    ev = used.to_evidence()
    assert ev["requested_by"] == "alice" and ev["approved_by"] == "bob"
    assert ev["approved_at"] == "2026-03-02T09:05:00Z" and ev["used_by_run"] == "run-1"
    assert json.loads(json.dumps(ev)) == ev
    with pytest.raises(BadInput, match=rf"request {req.id} was already used by run run-1 at "
                       "2026-03-02T09:10:00Z; request a new approval"):
        approvals.consume(plan, req.id, "region-failover", "prod", operator="carol",
                          now=T0 + timedelta(minutes=11))
    with pytest.raises(BadInput, match="already used"):
        approvals.approve(plan, req.id, operator="dave")
    linked = approvals.record_run(plan, req.id, evidence_id="20260302T091000Z-abcd")
    assert linked.evidence_id == "20260302T091000Z-abcd" and linked.used_by_run == "run-1"


def test_the_used_marker_wins_even_if_the_json_was_not_rewritten(plan):
    req = approved(plan)
    approvals.consume(plan, req.id, "region-failover", "prod", operator="carol", run_id="r1")
    path = plan.root / "evidence" / "requests" / f"{req.id}.json"
    data = json.loads(path.read_text())
    data.update(used_at=None, used_by=None, used_by_run=None)  # a crash before the rewrite
    path.write_text(json.dumps(data))
    assert approvals.get(plan, req.id).used_by_run == "r1"
    with pytest.raises(BadInput, match="already used"):
        approvals.consume(plan, req.id, "region-failover", "prod", operator="carol")


def test_threads_racing_for_one_request_exactly_one_wins(plan):
    req = approved(plan)
    barrier = threading.Barrier(8)
    wins: list[str] = []
    losses: list[str] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            approvals.consume(plan, req.id, "region-failover", "prod", operator=f"op{i}",
                              run_id=f"run-{i}")
            wins.append(f"run-{i}")
        except BadInput as e:
            losses.append(str(e))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(losses) == 7
    assert all("already used" in m for m in losses)
    assert approvals.get(plan, req.id).used_by_run == wins[0]


def _consume_in_process(plan_path: str, rid: str, i: int, start, results) -> None:  # noqa: ANN001
    from drkit.config import load_plan

    p = load_plan(plan_path)
    start.wait()
    try:
        approvals.consume(p, rid, "region-failover", "prod", operator=f"p{i}", run_id=f"p{i}")
        results.put(("won", i))
    except BadInput as e:
        results.put(("lost", str(e)))


def test_processes_racing_for_one_request_exactly_one_wins(plan):
    req = approved(plan)
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_consume_in_process,
                         args=(str(plan.path), req.id, i, start, results)) for i in range(4)]
    for p in procs:
        p.start()
    start.set()
    outcomes = [results.get(timeout=20) for _ in procs]
    for p in procs:
        p.join(timeout=20)
    won = [o for o in outcomes if o[0] == "won"]
    assert len(won) == 1, outcomes
    assert approvals.get(plan, req.id).used_by_run == f"p{won[0][1]}"


def test_an_expired_approval_is_refused(plan):
    req = approved(plan, expires_in=60)  # approved at T0+5m, lapses at T0+6m
    with pytest.raises(BadInput, match=rf"request {req.id} expired at 2026-03-02T09:06:00Z; "
                       "request a new approval"):
        approvals.consume(plan, req.id, "region-failover", "prod", operator="carol",
                          now=T0 + timedelta(minutes=6))
    assert approvals.get(plan, req.id).status(T0 + timedelta(minutes=7)) == RequestStatus.EXPIRED
    with pytest.raises(BadInput, match="must last more than 0s"):
        approvals.approve(plan, req.id, operator="bob", expires_in=0)


def test_unapproved_wrong_target_twice_and_unknown_are_refused(plan):
    req = approvals.request(plan, "region-failover", "prod", "CHG-9", operator="alice")
    with pytest.raises(BadInput, match=rf"request {req.id} is not approved \(another operator "
                       rf"must run `drkit drill approve {req.id}`\)"):
        approvals.require(plan, "region-failover", "prod", req.id, operator="alice")
    approvals.approve(plan, req.id, operator="bob")
    with pytest.raises(BadInput, match=r"already approved \(by bob at "):
        approvals.approve(plan, req.id, operator="carol")
    with pytest.raises(BadInput, match=rf"request {req.id} is for scenario 'region-failover' "
                       r"in environment 'prod', not 'region-failover' in 'staging'"):
        approvals.consume(plan, req.id, "region-failover", "staging", operator="carol")
    with pytest.raises(BadInput, match="not 'cert-drill' in 'prod'"):
        approvals.consume(plan, req.id, "cert-drill", "prod", operator="carol")
    with pytest.raises(BadInput, match=r"unknown request 'req-20990101T000000Z-000000' "
                       r"\(list them with `drkit drill requests`\)"):
        approvals.consume(plan, "req-20990101T000000Z-000000", "region-failover", "prod")
    with pytest.raises(BadInput, match="invalid request id"):
        approvals.get(plan, "../../etc/passwd")
    # The refusals above left the request usable.
    assert approvals.require(plan, "region-failover", "prod", req.id, operator="carol")


def test_requests_of_an_s3_store_live_beside_the_plan(tmp_path):
    plan = write_plan(tmp_path, text=PLAN.replace("store: ./evidence", "store: s3://b/dr"))
    req = approvals.request(plan, "region-failover", "prod", "CHG-1", operator="alice")
    assert (tmp_path / ".drkit" / "requests" / f"{req.id}.json").is_file()
    assert [r.id for r in approvals.list_requests(plan)] == [req.id]
