"""The on-call runbooks on the AWS-shaped estate (issue 14, item 7), acting only through AWS APIs
on the estate's moto, observed from outside through the lab's entry point, under live traffic
from an independent prober (drkit.flows.LoadGenerator):

- cert-rotation-acm: a new certificate imported into ACM in each region and each region's HTTPS
  listener switched to it; the entry point serves what the active region's listener names
  (drkit/lab/follower.py), so the served fingerprint proves the switch; a rotation that fails
  verification puts the previous listener certificate back;
- rolling-patch-asg: every instance of both regions' Auto Scaling groups replaced a batch at a
  time from a new launch template version; the lab's payments processes follow the instances and
  their version, and not one request through the entry point fails.

One estate per session (tests/aws/conftest.py).
"""

from __future__ import annotations

import hashlib
import json
import ssl
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.aws.conftest import AwsLab

pytestmark = pytest.mark.lab

PRIMARY, SECONDARY = "eu-west-1", "eu-central-1"


def _served(lab: AwsLab) -> str:
    """SHA-256 fingerprint of the certificate the entry point serves, as a client sees it."""
    pem = ssl.get_server_certificate(("127.0.0.1", lab.port_base + 1))
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def _fp(pem: str) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def _listener_certs(lab: AwsLab) -> dict[str, str]:
    out = {}
    for region, o in lab.estate()["regions"].items():
        listener = lab.client("elbv2", region).describe_listeners(
            ListenerArns=[o["https_listener_arn"]])["Listeners"][0]
        out[region] = listener["Certificates"][0]["CertificateArn"]
    return out


def _run(lab: AwsLab, name: str, *args: str) -> tuple[int, dict[str, Any]]:
    res = lab.drkit("runbook", "run", name, "--env", "lab-aws", "--json", *args, timeout=900)
    try:
        return res.returncode, json.loads(res.stdout)
    except ValueError:
        raise AssertionError(f"exit {res.returncode}, no JSON: {res.stdout[-3000:]}\n"
                             f"{res.stderr[-3000:]}") from None


@contextmanager
def _traffic(lab: AwsLab) -> Iterator[Any]:
    """Payments through the entry point for the whole block, from outside: none may fail."""
    from drkit.flows import LoadGenerator

    token = (lab.state_dir / "secrets" / "api.token").read_text().strip()
    gen = LoadGenerator(f"https://127.0.0.1:{lab.port_base + 1}",
                        str(lab.state_dir / "ca" / "ca.crt"), rate_per_s=20, workers=2,
                        token=token)
    gen.start()
    try:
        yield gen
    finally:
        stats = gen.stop()
    assert stats.ok > 20, stats
    assert stats.failed == 0, f"requests failed during the run: {stats.to_json()}"


def test_cert_rotation_switches_the_listeners_and_the_entry_point_serves_it(
        lab_aws: AwsLab) -> None:
    before, listeners_before = _served(lab_aws), _listener_certs(lab_aws)
    with _traffic(lab_aws):
        code, out = _run(lab_aws, "cert-rotation-acm", "--change-id", "CHG-41")
    assert code == 0, out
    summary = out["summary"]
    new = summary["new"]["fingerprint_sha256"].replace(":", "").lower()
    assert _served(lab_aws) == new != before
    assert summary["verified"] is True and summary["restored"] is False
    # moto's listeners name the new certificates, and ACM holds the certificate served.
    listeners = _listener_certs(lab_aws)
    assert set(listeners.values()).isdisjoint(listeners_before.values()), listeners
    assert listeners == summary["listeners"]
    for region, arn in listeners.items():
        assert arn.startswith(f"arn:aws:acm:{region}:"), arn
        body = lab_aws.client("acm", region).get_certificate(CertificateArn=arn)["Certificate"]
        assert _fp(body) == new
    events = [e for e in lab_aws.follower()["events"] if e["what"] == "certificate"]
    assert events and events[-1]["arn"] == listeners[PRIMARY], events
    # The evidence keeps fingerprints and ARNs, never a key.
    assert "PRIVATE KEY" not in json.dumps(out)


def test_a_failed_cert_rotation_puts_the_previous_listener_certificates_back(
        lab_aws: AwsLab) -> None:
    before, listeners_before = _served(lab_aws), _listener_certs(lab_aws)
    with _traffic(lab_aws):
        # Valid for 10 days while the plan wants 30: the check after the switch fails.
        code, out = _run(lab_aws, "cert-rotation-acm",
                         "--extra-var", "drkit_cert_validity_days=10")
    assert code == 1, out
    assert "the endpoint serves" in out["failure"] and "again" in out["failure"], out["failure"]
    assert out["summary"]["restored"] is True
    assert _served(lab_aws) == before
    assert _listener_certs(lab_aws) == listeners_before
    # The certificates it imported are gone from ACM (no listener names them).
    for arn in out["summary"]["new"]["acm_arns"]:
        region = arn.split(":")[3]
        with pytest.raises(Exception, match="ResourceNotFound"):
            lab_aws.client("acm", region).describe_certificate(CertificateArn=arn)


def _group(lab: AwsLab, region: str) -> dict[str, Any]:
    name = lab.estate()["regions"][region]["asg_name"]
    g: dict[str, Any] = lab.client("autoscaling", region).describe_auto_scaling_groups(
        AutoScalingGroupNames=[name])["AutoScalingGroups"][0]
    return g


def _versions_served(lab: AwsLab, region: str) -> list[str]:
    """/healthz of the region's payments processes, asked directly (not through the LB)."""
    offset = 10 if region == PRIMARY else 30
    out = []
    for i in (1, 2):
        url = f"http://127.0.0.1:{lab.port_base + offset + i}/healthz"
        with urllib.request.urlopen(url, timeout=5) as r:
            out.append(json.loads(r.read())["version"])
    return out


def test_rolling_patch_replaces_every_instance_with_no_failed_request(lab_aws: AwsLab) -> None:
    before = {r: {i["InstanceId"] for i in _group(lab_aws, r)["Instances"]}
              for r in (PRIMARY, SECONDARY)}
    since = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    with _traffic(lab_aws):
        code, out = _run(lab_aws, "rolling-patch-asg", "--change-id", "CHG-42",
                         "--extra-var", "drkit_patch_version=1.0.1")
    assert code == 0, out
    for region in (PRIMARY, SECONDARY):
        g = _group(lab_aws, region)
        now = {i["InstanceId"] for i in g["Instances"] if i["LifecycleState"] == "InService"}
        assert len(now) == g["DesiredCapacity"] == 2 and now.isdisjoint(before[region]), g
        ec2 = lab_aws.client("ec2", region)
        for res in ec2.describe_instances(InstanceIds=sorted(now))["Reservations"]:
            for inst in res["Instances"]:
                tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
                assert tags.get("drkit-version") == "1.0.1", tags
        for res in ec2.describe_instances(InstanceIds=sorted(before[region]))["Reservations"]:
            assert {i["State"]["Name"] for i in res["Instances"]} <= {"terminated",
                                                                      "shutting-down"}
        tg = lab_aws.estate()["regions"][region]["target_group_arn"]
        health = lab_aws.client("elbv2", region).describe_target_health(TargetGroupArn=tg)
        states = {h["Target"]["Id"]: h["TargetHealth"]["State"]
                  for h in health["TargetHealthDescriptions"]}
        assert {i: states.get(i) for i in now} == dict.fromkeys(now, "healthy"), states
        # The lab's processes followed: each runs the new version.
        assert _versions_served(lab_aws, region) == ["1.0.1", "1.0.1"]
        assert set(out["summary"]["regions"][region]["replaced"]) == now
    # The follower started each of the four slots' processes at the new version during this
    # run (its events carry the follower's clock, in the same format). Not "instance-replaced":
    # that is noted only when the old process still ran, and the group may have terminated the
    # old instance (its process stopped) before launching the new one.
    started = {e["name"] for e in lab_aws.follower()["events"]
               if e["what"] == "instance-started" and e["at"] >= since
               and e.get("version") == "1.0.1"}
    assert len(started) == 4, lab_aws.follower()["events"]
    # A second run has nothing left to replace.
    code, again = _run(lab_aws, "rolling-patch-asg", "--extra-var", "drkit_patch_version=1.0.1")
    assert code == 0, again
    assert all(r["replaced"] == [] for r in again["summary"]["regions"].values()), again


def test_a_patch_that_fails_its_health_check_is_rolled_back_and_stops_the_roll(
        lab_aws: AwsLab) -> None:
    """The new version's instances never pass their health check (the lab's fault tag gives
    them a database that does not answer): the first batch's replacement stays `initial`, the
    launch template launches the previous version again, the bad replacement is replaced, and
    the roll stops, with every target healthy and no request failed."""
    before = {i["InstanceId"] for i in _group(lab_aws, PRIMARY)["Instances"]}
    with _traffic(lab_aws):
        code, out = _run(lab_aws, "rolling-patch-asg",
                         "--extra-var", "drkit_patch_version=6.6.6",
                         "--extra-var", 'drkit_patch_tags={"drkit-lab-fault": "unhealthy"}',
                         "--extra-var", 'drkit_patch_roles=["primary"]',
                         "--extra-var", "drkit_patch_timeout_s=20")
    assert code == 1, out
    assert "the launch template launches the previous version again" in out["failure"], out
    g = _group(lab_aws, PRIMARY)
    now = sorted(i["InstanceId"] for i in g["Instances"] if i["LifecycleState"] == "InService")
    # The first batch's instance was replaced (twice); the other one was never touched.
    assert len(now) == 2 and len(before & set(now)) == 1, (before, now)
    tg = lab_aws.estate()["regions"][PRIMARY]["target_group_arn"]
    health = lab_aws.client("elbv2", PRIMARY).describe_target_health(TargetGroupArn=tg)
    states = {h["Target"]["Id"]: h["TargetHealth"]["State"]
              for h in health["TargetHealthDescriptions"]}
    assert {states.get(i) for i in now} == {"healthy"}, states
    assert _versions_served(lab_aws, PRIMARY) == ["1.0.1", "1.0.1"]  # the roll stopped
