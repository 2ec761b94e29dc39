"""The data/aurora and compute/fis adapters against moto (issue 14): what moto can prove, and
that what it cannot is a failure naming the gap, never an ok (docs/targets.md).

A real moto server (moto.server, started here on a free port), seeded with boto3 as an estate
would be; the adapters' own task files run through drkit's engine (ansible-runner), as a drill
runs them. No lab: these are quick.

- Aurora: moto 5.2.5 creates global databases and member clusters and describes which member
  writes, so preflight is tested both ways. It does not implement FailoverGlobalCluster (or
  SwitchoverGlobalCluster), and its RemoveFromGlobalCluster changes nothing: promote-data fails
  saying so, and the detach path fails on its describe-after-act.
- FIS: moto runs an experiment template as a state machine that acts on no resource, so
  inject-fault fails on its describe-after-act (the tagged instances still run); the template
  check (only aws:ec2:stop-instances) and the target check are tested.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, free_port_base

PRIMARY, SECONDARY = "eu-west-1", "eu-central-1"
CREDS = {"AWS_ACCESS_KEY_ID": "drkit-test", "AWS_SECRET_ACCESS_KEY": "drkit-test-not-a-secret",
         "AWS_DEFAULT_REGION": PRIMARY, "AWS_EC2_METADATA_DISABLED": "true",
         "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}


@dataclass
class Moto:
    endpoint: str

    def client(self, service: str, region: str) -> Any:
        import boto3

        return boto3.client(service, region_name=region, endpoint_url=self.endpoint,
                            aws_access_key_id=CREDS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=CREDS["AWS_SECRET_ACCESS_KEY"])


@pytest.fixture(scope="module")
def moto() -> Iterator[Moto]:
    from moto.server import ThreadedMotoServer

    port = free_port_base(span=1)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield Moto(f"http://127.0.0.1:{port}")
    finally:
        server.stop()


def _run_step(tmp_path: Path, moto: Moto, step: str, variables: dict[str, Any]) -> Any:
    """Run one adapter task file (playbooks/adapters/<step>.yml) as a drill phase would."""
    from drkit import engine

    play = [{"name": f"Run {step}", "hosts": "localhost", "gather_facts": False,
             "vars": {"drkit_aws_endpoint_url": moto.endpoint, "drkit_region_primary": PRIMARY,
                      "drkit_region_secondary": SECONDARY, "drkit_poll_delay_s": 0.2,
                      **variables},
             "tasks": [{"name": f"Run the {step} step",
                        "ansible.builtin.include_tasks":
                            str(REPO / "playbooks" / "adapters" / f"{step}.yml")}]}]
    pb = tmp_path / f"{step.replace('/', '-')}.yml"
    pb.write_text(yaml.safe_dump(play, sort_keys=False))
    inv = tmp_path / "hosts.yml"
    inv.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
        "ansible_connection": "local",
        "ansible_python_interpreter": "{{ ansible_playbook_python }}"}}}}))
    return engine.run_playbook(pb, inventory=inv, content_root=REPO,
                               artifacts_dir=tmp_path / "runs" / step.replace("/", "-"),
                               envvars=CREDS)


def _failed(result: Any) -> str:
    failed = [t for t in result.tasks if t.status == "failed"]
    assert failed, f"expected a failed task, got {[(t.task, t.status) for t in result.tasks]}"
    return str(failed[-1].message)


# ---------------------------------------------------------------------------------------------
# Aurora global database


@pytest.fixture(scope="module")
def aurora(moto: Moto) -> dict[str, Any]:
    pri, sec = moto.client("rds", PRIMARY), moto.client("rds", SECONDARY)
    pri.create_global_cluster(GlobalClusterIdentifier="payments-global",
                              Engine="aurora-postgresql", EngineVersion="15.4")
    c1 = pri.create_db_cluster(DBClusterIdentifier="payments-euw1", Engine="aurora-postgresql",
                               EngineVersion="15.4", MasterUsername="payments_admin",
                               MasterUserPassword="not-a-real-one-1",
                               GlobalClusterIdentifier="payments-global")["DBCluster"]
    c2 = sec.create_db_cluster(DBClusterIdentifier="payments-euc1", Engine="aurora-postgresql",
                               EngineVersion="15.4",
                               GlobalClusterIdentifier="payments-global")["DBCluster"]
    return {"drkit_aurora_global_cluster": "payments-global",
            "drkit_aurora_clusters": {"primary": "payments-euw1", "secondary": "payments-euc1"},
            "arns": {"primary": c1["DBClusterArn"], "secondary": c2["DBClusterArn"]}}


def test_aurora_preflight_sees_the_primary_writing_and_the_secondary_replicating(
        tmp_path: Path, moto: Moto, aurora: dict[str, Any]) -> None:
    res = _run_step(tmp_path, moto, "data/aurora/preflight", aurora)
    assert res.ok, res.failure
    assert [t.status for t in res.tasks if "Check that" in t.task] == ["ok"]


def test_aurora_preflight_fails_when_the_primary_region_does_not_write(
        tmp_path: Path, moto: Moto, aurora: dict[str, Any]) -> None:
    swapped = {**aurora, "drkit_aurora_clusters": {"primary": "payments-euc1",
                                                   "secondary": "payments-euw1"}}
    swapped["drkit_region_primary"], swapped["drkit_region_secondary"] = SECONDARY, PRIMARY
    res = _run_step(tmp_path, moto, "data/aurora/preflight", swapped)
    assert not res.ok
    msg = _failed(res)
    assert "expected it available with payments-euc1 the writer" in msg, msg
    assert aurora["arns"]["primary"] in msg  # what it saw: the real writer


def test_aurora_promotion_is_not_claimed_where_moto_cannot_fail_over(
        tmp_path: Path, moto: Moto, aurora: dict[str, Any]) -> None:
    res = _run_step(tmp_path, moto, "data/aurora/promote-data",
                    {**aurora, "drkit_aurora_timeout_s": 3})
    assert not res.ok
    msg = _failed(res)
    assert "FailoverGlobalCluster: the endpoint does not implement it" in msg, msg
    # The older detach-and-promote path: moto accepts RemoveFromGlobalCluster and changes
    # nothing, and the describe after the act says so.
    res = _run_step(tmp_path, moto, "data/aurora/promote-data",
                    {**aurora, "drkit_aurora_timeout_s": 2, "drkit_aurora_promote_by": "detach"})
    assert not res.ok
    msg = _failed(res)
    assert "RemoveFromGlobalCluster on payments-global: expected" in msg, msg
    assert f"{aurora['arns']['secondary']} no longer a member" in msg, msg
    # Nothing changed: the primary region still writes.
    g = moto.client("rds", PRIMARY).describe_global_clusters(
        GlobalClusterIdentifier="payments-global")["GlobalClusters"][0]
    writers = [m["DBClusterArn"] for m in g["GlobalClusterMembers"] if m["IsWriter"]]
    assert writers == [aurora["arns"]["primary"]]


def test_aurora_failback_and_reseed_hold_when_the_primary_still_writes(
        tmp_path: Path, moto: Moto, aurora: dict[str, Any]) -> None:
    """A drill stopped before promotion: failback finds the primary writing (no call made) and
    reseed finds the secondary a reader member."""
    for step in ("data/aurora/failback", "data/aurora/reseed"):
        res = _run_step(tmp_path, moto, step, aurora)
        assert res.ok, (step, res.failure)
        assert not any(t.changed for t in res.tasks), step


# ---------------------------------------------------------------------------------------------
# FIS


@pytest.fixture(scope="module")
def fis(moto: Moto) -> dict[str, Any]:
    ec2 = moto.client("ec2", PRIMARY)
    ids = [i["InstanceId"] for i in ec2.run_instances(
        ImageId="ami-12c6146b", MinCount=2, MaxCount=2, TagSpecifications=[{
            "ResourceType": "instance",
            "Tags": [{"Key": "drkit-role", "Value": "primary"}]}])["Instances"]]
    client = moto.client("fis", PRIMARY)

    def template(action: str) -> str:
        return str(client.create_experiment_template(
            description=f"drkit {action}", roleArn="arn:aws:iam::123456789012:role/fis",
            stopConditions=[{"source": "none"}],
            targets={"primary": {"resourceType": "aws:ec2:instance",
                                 "resourceTags": {"drkit-role": "primary"},
                                 "selectionMode": "ALL"}},
            actions={"stop": {"actionId": action, "targets": {"Instances": "primary"}}},
        )["experimentTemplate"]["id"])

    return {"stop": template("aws:ec2:stop-instances"),
            "terminate": template("aws:ec2:terminate-instances"), "ids": ids}


def test_fis_preflight_accepts_a_stop_template_and_refuses_any_other(
        tmp_path: Path, moto: Moto, fis: dict[str, Any]) -> None:
    tags = {"drkit_fis_stop_tags": {"drkit-role": "primary"}}
    res = _run_step(tmp_path, moto, "compute/fis/preflight",
                    {**tags, "drkit_fis_template_id": fis["stop"]})
    assert res.ok, res.failure
    res = _run_step(tmp_path, moto, "compute/fis/preflight",
                    {**tags, "drkit_fis_template_id": fis["terminate"]})
    assert not res.ok
    assert "uses ['aws:ec2:terminate-instances']; drkit runs only" in _failed(res)


def test_fis_fault_is_not_claimed_where_moto_stops_nothing(
        tmp_path: Path, moto: Moto, fis: dict[str, Any]) -> None:
    res = _run_step(tmp_path, moto, "compute/fis/inject-fault",
                    {"drkit_fis_stop_tags": {"drkit-role": "primary"},
                     "drkit_fis_template_id": fis["stop"]})
    assert not res.ok
    msg = _failed(res)
    assert "expected the instances tagged" in msg and "'running'" in msg, msg
    states = moto.client("ec2", PRIMARY).describe_instances(InstanceIds=fis["ids"])
    assert {i["State"]["Name"] for r in states["Reservations"] for i in r["Instances"]} == {
        "running"}
    json.dumps(msg)  # the message is plain text (it goes into the evidence)
