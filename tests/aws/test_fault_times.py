"""The AWS compute adapters' fault steps say when the fault was issued (issue 19: the clock
measures the outage, not drkit), as drkit.dr.lose_region does on the lab: they publish the
custom stat `drkit_fault`, and the drill's clock_start starts the clock at its issued_at.

Against a real moto server (tests/aws/test_aurora_and_fis.py's), through drkit's engine, as a
drill runs the steps. No lab: these are quick.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from drkit.drill.run import _parse_ts, clock_start
from tests.aws import test_aurora_and_fis as aws
from tests.aws.test_aurora_and_fis import PRIMARY, Moto, _run_step

moto = aws.moto  # its module-scoped moto server fixture (one server for this module)


def _times(fault: dict[str, Any]) -> tuple[datetime, datetime]:
    return _parse_ts(fault["issued_at"]), _parse_ts(fault["confirmed_at"])


def _clock_from(fault: dict[str, Any], phase_at: datetime) -> None:
    """The drill starts its clock at this step's issued_at, naming the fault step."""
    at, source, _ = clock_start("inject-fault", phase_at, fault, None)
    assert at == _parse_ts(fault["issued_at"]), source
    assert source.startswith("phase inject-fault's fault step: issued at"), source


def test_the_asg_fault_step_publishes_when_it_took_the_capacity_away(
        tmp_path: Path, moto: Moto) -> None:
    ec2, asg = moto.client("ec2", PRIMARY), moto.client("autoscaling", PRIMARY)
    lt = ec2.create_launch_template(LaunchTemplateName="payments-fault-times", LaunchTemplateData={
        "ImageId": "ami-12c6146b", "InstanceType": "t3.micro"})["LaunchTemplate"]
    asg.create_auto_scaling_group(
        AutoScalingGroupName="payments-fault-times", MinSize=2, MaxSize=4, DesiredCapacity=2,
        LaunchTemplate={"LaunchTemplateId": lt["LaunchTemplateId"]},
        AvailabilityZones=[f"{PRIMARY}a"])
    before = [i["InstanceId"] for i in asg.describe_auto_scaling_groups(
        AutoScalingGroupNames=["payments-fault-times"])["AutoScalingGroups"][0]["Instances"]]
    assert len(before) == 2
    variables = {"drkit_asg_names": {"primary": "payments-fault-times"}}

    res = _run_step(tmp_path, moto, "compute/asg/inject-fault", variables)
    assert res.ok, res.failure
    fault = res.stat_values("drkit_fault")
    assert isinstance(fault, dict), res.facts
    issued, confirmed = _times(fault)
    assert res.started_at <= issued <= confirmed <= res.ended_at, fault
    assert fault["instances"] == dict.fromkeys(before, "payments-fault-times"), fault
    assert fault["region"] == PRIMARY and fault["database_pid"] is None, fault
    _clock_from(fault, res.started_at)

    # A group already at 0: no call made, so no time to start a clock from (the drill falls
    # back to the phase start and says the fault step published none).
    (tmp_path / "again").mkdir()
    again = _run_step(tmp_path / "again", moto, "compute/asg/inject-fault", variables)
    assert again.ok, again.failure
    assert again.stat_values("drkit_fault") is None, again.facts
    at, source, _ = clock_start("inject-fault", again.started_at, None, None)
    assert at == again.started_at and "published no time" in source


def test_the_fis_fault_step_publishes_only_once_the_instances_were_seen_stopped(
        tmp_path: Path, moto: Moto) -> None:
    """moto's FIS acts on no resource (tests/aws/test_aurora_and_fis.py): with the tagged
    instances left running the step fails and publishes nothing; with them stopped (by hand,
    as a real FIS would have) it publishes the experiment's start and the describe's time."""
    ec2 = moto.client("ec2", PRIMARY)
    tags = {"drkit-role": "primary-fault-times"}
    ids = [i["InstanceId"] for i in ec2.run_instances(
        ImageId="ami-12c6146b", MinCount=2, MaxCount=2, TagSpecifications=[{
            "ResourceType": "instance",
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}])["Instances"]]
    template = moto.client("fis", PRIMARY).create_experiment_template(
        description="drkit stop", roleArn="arn:aws:iam::123456789012:role/fis",
        stopConditions=[{"source": "none"}],
        targets={"primary": {"resourceType": "aws:ec2:instance", "resourceTags": tags,
                             "selectionMode": "ALL"}},
        actions={"stop": {"actionId": "aws:ec2:stop-instances",
                          "targets": {"Instances": "primary"}}})["experimentTemplate"]["id"]
    variables = {"drkit_fis_stop_tags": tags, "drkit_fis_template_id": template}

    res = _run_step(tmp_path, moto, "compute/fis/inject-fault", variables)
    assert not res.ok
    assert res.stat_values("drkit_fault") is None, res.facts

    ec2.stop_instances(InstanceIds=ids)
    (tmp_path / "stopped").mkdir()
    res = _run_step(tmp_path / "stopped", moto, "compute/fis/inject-fault", variables)
    assert res.ok, res.failure
    fault = res.stat_values("drkit_fault")
    assert isinstance(fault, dict), res.facts
    issued, confirmed = _times(fault)
    assert res.started_at <= issued <= confirmed <= res.ended_at, fault
    assert fault["instances"] == dict.fromkeys(ids, "stopped"), fault
    assert "aws:ec2:stop-instances" in fault["fault"], fault
    _clock_from(fault, res.started_at)
