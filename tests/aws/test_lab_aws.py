"""The AWS path end to end (issue 14), on the AWS-shaped lab: a Terraform-built estate on moto,
the drill acting only through AWS APIs, the lab's PostgreSQL, entry point and payments instances
following moto's state, and real payments observed through the entry point.

One estate per session (tests/aws/conftest.py); the drift test puts back what it changed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.aws.conftest import STATE_BUCKET, STATE_REGION, AwsLab

pytestmark = pytest.mark.lab

PRIMARY, SECONDARY = "eu-west-1", "eu-central-1"


def _primary_record(lab: AwsLab) -> str:
    est = lab.estate()
    r53 = lab.client("route53", "us-east-1")
    zone = next(z for z in r53.list_hosted_zones()["HostedZones"]
                if z["Name"] == est["zone"].rstrip(".") + ".")
    sets = r53.list_resource_record_sets(HostedZoneId=zone["Id"])["ResourceRecordSets"]
    rec = next(s for s in sets if s.get("SetIdentifier") == "primary")
    value: str = rec["ResourceRecords"][0]["Value"]
    return value.rstrip(".")


def _desired(lab: AwsLab, region: str) -> int:
    name = lab.estate()["regions"][region]["asg_name"]
    g = lab.client("autoscaling", region).describe_auto_scaling_groups(
        AutoScalingGroupNames=[name])["AutoScalingGroups"][0]
    return int(g["DesiredCapacity"])


def test_terraform_state_lives_in_the_third_region_and_was_locked(lab_aws: AwsLab) -> None:
    s3 = lab_aws.client("s3", STATE_REGION)
    assert s3.get_bucket_location(Bucket=STATE_BUCKET)["LocationConstraint"] == STATE_REGION
    assert s3.get_bucket_versioning(Bucket=STATE_BUCKET)["Status"] == "Enabled"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=STATE_BUCKET).get("Contents", [])}
    # One state per region, each in its own workspace (the S3 backend's env:/ prefix).
    for region in (PRIMARY, SECONDARY):
        key = f"env:/{region}/payments/regional.tfstate"
        assert key in keys, keys
        state = json.loads(s3.get_object(Bucket=STATE_BUCKET, Key=key)["Body"].read())
        types = {r["type"] for r in state["resources"]}
        assert {"aws_vpc", "aws_db_instance", "aws_lb", "aws_lb_target_group",
                "aws_autoscaling_group", "aws_route53_record"} <= types, types
    # The apply held Terraform's lock in the third region's DynamoDB table.
    applies = [lk for lk in lab_aws.locks_seen if lk.get("Operation") == "OperationTypeApply"]
    assert applies, f"no apply lock seen in the lock table: {lab_aws.locks_seen}"
    assert all(lk["lock_id"].startswith(STATE_BUCKET + "/") for lk in applies)


def test_the_lab_follows_the_estate(lab_aws: AwsLab) -> None:
    st = lab_aws.drkit("lab-aws", "status", "--json")
    assert st.returncode == 0, st.stdout + st.stderr
    seen = json.loads(st.stdout)["follower"]
    assert seen["route53_active"] == PRIMARY == seen["haproxy_active"]
    assert seen["instances_running"] == {PRIMARY: 2, SECONDARY: 2}
    # The secondary region's database is a read replica of the primary's, in moto.
    assert seen["rds"][SECONDARY]["replica_of"] == PRIMARY
    assert seen["rds"][PRIMARY]["replica_of"] is None


def test_drift_made_by_hand_is_a_preflight_finding(lab_aws: AwsLab) -> None:
    name = lab_aws.estate()["regions"][SECONDARY]["asg_name"]
    asg = lab_aws.client("autoscaling", SECONDARY)
    asg.update_auto_scaling_group(AutoScalingGroupName=name, MaxSize=7)  # the module says 9
    try:
        res = lab_aws.drkit("drill", "check", "--env", "lab-aws", "--json")
    finally:
        asg.update_auto_scaling_group(AutoScalingGroupName=name, MaxSize=9)
    assert res.returncode == 1, res.stdout[-2000:] + res.stderr[-2000:]
    out = json.loads(res.stdout)
    finding = next(f for f in out["findings"] if f["check"] == "preflight")
    msg = finding["message"]
    assert f"Terraform drift in {SECONDARY}: terraform plan would change" in msg, msg
    assert "aws_autoscaling_group.app" in msg, msg
    assert f"drift in {PRIMARY}" not in msg, msg  # only the region that drifted


def test_lab_aws_drill_recovers_through_aws_apis_only(lab_aws: AwsLab) -> None:
    res = lab_aws.drkit("drill", "run", "region-failover", "--env", "lab-aws", "--json",
                        timeout=1500)
    out: dict[str, Any] = json.loads(res.stdout) if res.stdout.strip().startswith("{") else {}
    assert res.returncode == 0, (res.stdout[-4000:], res.stderr[-4000:])
    assert out["verdict"] == "pass", out
    phases = {p["name"]: p["status"] for p in out["phases"]}
    assert set(phases.values()) == {"ok"}, phases
    # Issue 19: the clock starts when compute/asg's fault step sent SetDesiredCapacity 0 (its
    # own time, published as drkit_fault), or at the phase start when the canary failed first.
    source = out["rto"]["clock_started_source"]
    assert source.startswith("phase inject-fault's fault step: issued at") or (
        "came before the fault step's time" in source), out["rto"]
    # Payments really flowed again: the canary's acknowledged payments are all there.
    rec = out["reconciliation"]
    assert rec["lost_count"] == 0 and out["rpo"]["lost_payments"] == 0, rec
    assert rec["acked_count"] > 0, rec
    assert out["after_failback"]["lost_count"] == 0, out["after_failback"]
    # Failback (a run of its own) waited for the terraform apply recreate-stack started in the
    # recovery run and checked its outputs: the check ran, it was not skipped.
    events = [json.loads(line) for p in Path(out["artifacts_dir"]).rglob("job_events.jsonl")
              for line in p.read_text().splitlines() if line.strip()]
    check = "Check that the secondary region's stack"
    checked = [e["event"] for e in events if e["event"] in (
        "runner_on_ok", "runner_on_skipped", "runner_on_failed")
        and e["event_data"].get("task", "").startswith(check)]
    assert checked == ["runner_on_ok"], checked
    # What the follower saw and did, in order: the primary's instances gone (ASG 0), the
    # replica promoted (PromoteReadReplica), traffic to the secondary (Route53), then back.
    events = [e["what"] + ":" + str(e.get("region")) for e in lab_aws.follower()["events"]]
    flow = ["instance-stopped:" + PRIMARY, "db-promoted:" + SECONDARY, "traffic:" + SECONDARY,
            "db-standby:" + PRIMARY, "db-promoted:" + PRIMARY, "traffic:" + PRIMARY,
            "db-standby:" + SECONDARY]
    at = 0
    for step in flow:
        assert step in events[at:], f"{step} not after {flow[:flow.index(step)]}: {events}"
        at = events.index(step, at) + 1
    # moto afterwards: Route53 answers with the primary again, capacity restored in both
    # regions, the secondary's database a read replica of the primary's again.
    est = lab_aws.estate()
    assert _primary_record(lab_aws) == est["regions"][PRIMARY]["region_endpoint"]
    assert _desired(lab_aws, PRIMARY) == 2 and _desired(lab_aws, SECONDARY) == 2
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        seen = lab_aws.follower()
        if seen["instances_running"] == {PRIMARY: 2, SECONDARY: 2}:
            break
        time.sleep(0.3)
    assert seen["instances_running"] == {PRIMARY: 2, SECONDARY: 2}, seen
    assert seen["rds"][SECONDARY]["replica_of"] == PRIMARY, seen["rds"]
    st = lab_aws.drkit("lab", "status", "--json")
    assert json.loads(st.stdout)["drift"] is None, st.stdout


def test_a_broken_route53_flip_fails_at_failover_traffic_and_rolls_back(lab_aws: AwsLab) -> None:
    """The flip names a target nobody serves: Route53 answers it, but clients (the entry point)
    never reach the secondary region; the drill fails there, with expected and seen, and its
    rollback brings the primary back through the same AWS APIs."""
    res = lab_aws.drkit("drill", "run", "region-failover", "--env", "lab-aws-broken", "--json",
                        timeout=1500)
    out = json.loads(res.stdout)
    assert res.returncode == 1, (res.stdout[-3000:], res.stderr[-3000:])
    assert out["verdict"] == "fail"
    phases = {p["name"]: p for p in out["phases"]}
    failed = phases["failover-traffic"]
    assert failed["status"] == "failed", phases
    assert (f"expected answers from {SECONDARY} (Route53's failover answer), seen"
            in failed["message"]), failed["message"]
    assert phases["smoke"]["status"] == "skipped"
    # The rollback restored service from the primary region, through the AWS APIs.
    assert _primary_record(lab_aws) == lab_aws.estate()["regions"][PRIMARY]["region_endpoint"]
    assert _desired(lab_aws, PRIMARY) == 2
    st = lab_aws.drkit("lab-aws", "status", "--json")
    assert st.returncode == 0, st.stdout
