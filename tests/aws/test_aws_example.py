"""The shipped real-account example (issue 14, item 6): inventories/aws-example defines what its
adapters read, docs/iam-policy.json allows the calls they make, an environment typed
`target: aws` records the STS caller identity that ran the drill (observed, not self-asserted),
and a full drill with aws-example's adapter choices runs against moto (the session's
AWS-shaped lab, tests/aws/conftest.py: no second estate)."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.aws.conftest import AwsLab
from tests.conftest import REPO

EXAMPLE = REPO / "inventories" / "aws-example"
LAB_AWS = REPO / "inventories" / "lab-aws"
TASKS = REPO / "playbooks" / "adapters"
MODULES = REPO / "collections" / "ansible_collections" / "drkit" / "dr" / "plugins" / "modules"
MOTO_ARN = "arn:aws:sts::123456789012:user/moto"  # moto's caller identity
# Read by the adapters only behind a guard: `| default('')` inside an expression
# (drkit_aws_endpoint_url) or `when: drkit_rds_lab_observer` (the lab's PostgreSQL).
GUARDED = {"drkit_aws_endpoint_url", "drkit_lab_pg"}
# Set by the drill itself (drkit/drill/run.py, drkit/targets.py) as extra vars.
DRILL_VARS = {"drkit_run_id", "drkit_run_dir", "drkit_scenario", "drkit_rto_target_s",
              "drkit_rpo_target_s", "drkit_smoke_flows", "drkit_smoke_pack",
              "drkit_smoke_timeout_s", "drkit_python", "drkit_content_root",
              "drkit_environment", "drkit_completed_phases"}


def _vars(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def _adapter_dirs() -> list[Path]:
    chosen = _vars(EXAMPLE / "group_vars" / "all.yml")["drkit_adapters"]
    return [TASKS / comp / name for comp, name in chosen.items()]


def test_aws_example_defines_everything_its_adapters_read() -> None:
    from drkit.adapters import check_inventory

    example = _vars(EXAMPLE / "group_vars" / "all.yml")
    twin = _vars(LAB_AWS / "group_vars" / "all" / "10-aws.yml")
    assert example["drkit_adapters"] == twin["drkit_adapters"], "the lab-aws drill tests these"
    assert check_inventory("production", EXAMPLE, REPO) == []
    # And every drkit_ variable the chosen adapters' task files read, unguarded, is defined by
    # the example, the drill, or the task files themselves (register, set_fact, vars).
    used, defined = set(), set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "register":
                    defined.add(v)
                elif k in ("ansible.builtin.set_fact", "vars") and isinstance(v, dict):
                    defined.update(v)
                elif k == "ansible.builtin.set_stats" and isinstance(v, dict):
                    defined.update(v.get("data") or {})  # published for the drill, not read
                elif k == "loop_control" and isinstance(v, dict) and "loop_var" in v:
                    defined.add(v["loop_var"])
                walk(v)
        elif isinstance(node, list):
            for x in node:
                walk(x)

    files = [f for d in _adapter_dirs() for f in sorted(d.rglob("*.yml"))]
    assert len(files) >= 10, files
    for f in files:
        text = f.read_text()
        doc = yaml.safe_load(text)
        if f.parent.name == "vars" and isinstance(doc, dict):
            defined.update(doc)
        walk(doc)
        used |= set(re.findall(r"\b(drkit_[a-z0-9_]+)\b(?!\s*\|\s*default)", text))
    missing = used - defined - set(example) - DRILL_VARS - GUARDED
    assert not missing, f"the adapters read {sorted(missing)}: define them in aws-example"


# amazon.aws modules the adapters call, and the API calls each makes (their documentation).
AMAZON_CALLS = {
    "amazon.aws.route53": ["route53:ChangeResourceRecordSets", "route53:ListResourceRecordSets",
                           "route53:GetChange", "route53:ListHostedZones"],
    "amazon.aws.rds_instance_info": ["rds:DescribeDBInstances", "rds:ListTagsForResource"],
}
# Not AWS: the lab's PostgreSQL read as the promotion's observer (drkit_rds_lab_observer only).
LOCAL_MODULES = {"drkit.dr.pg_info"}
CLIENT_SERVICE = {"asg": "autoscaling", "rds": "rds", "ec2": "ec2", "r53": "route53"}
# Terraform's S3 backend with DynamoDB locking (the state in the third region).
STATE_CALLS = ["s3:GetObject", "s3:PutObject", "s3:ListBucket", "dynamodb:GetItem",
               "dynamodb:PutItem", "dynamodb:DeleteItem"]


def _camel(snake: str) -> str:
    return "".join(p.upper() if p in ("db",) else p.capitalize() for p in snake.split("_"))


def _allowed(policy: dict[str, Any], action: str) -> bool:
    for st in policy["Statement"]:
        acts = st.get("Action", [])
        acts = [acts] if isinstance(acts, str) else acts
        if st.get("Effect") == "Allow" and any(fnmatch.fnmatchcase(action, a) for a in acts):
            return True
    return False


def test_the_iam_policy_allows_every_call_the_adapters_make() -> None:
    policy = json.loads((REPO / "docs" / "iam-policy.json").read_text())
    needed = {"sts:GetCallerIdentity", *STATE_CALLS}
    for d in _adapter_dirs():
        for f in d.rglob("*.yml"):
            text = f.read_text()
            for mod in set(re.findall(r"^\s+(drkit\.dr\.[a-z0-9_]+|amazon\.aws\.[a-z0-9_]+):",
                                      text, re.M)):
                if mod.startswith("amazon.aws."):
                    assert mod in AMAZON_CALLS, f"{f}: {mod}: list the calls it makes here"
                    needed.update(AMAZON_CALLS[mod])
                    continue
                if mod in LOCAL_MODULES:
                    continue
                # A module, or an action plugin (controller side) documented as one.
                name = mod.split(".")[-1] + ".py"
                src = "".join(p.read_text() for p in (MODULES / name, MODULES.parent / "action"
                                                      / name) if p.is_file())
                calls = re.findall(r"\b(asg|rds|ec2|r53)\.([a-z_]+)\(", src)
                assert calls, f"{mod}: no AWS client calls found in its source"
                needed.update(f"{CLIENT_SERVICE[c]}:{_camel(m)}" for c, m in calls)
    assert "rds:PromoteReadReplica" in needed and "autoscaling:SetDesiredCapacity" in needed
    missing = sorted(a for a in needed if not _allowed(policy, a))
    assert not missing, f"docs/iam-policy.json does not allow {missing}"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    moto = Path(sys.executable).parent / "moto_server"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("moto_server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_an_aws_target_records_the_sts_caller_it_used(moto_url: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The identity comes from the environment's own AWS settings (the lab-aws estate's moto),
    not from this process's, and is marked observed; without AWS it is self-asserted."""
    from drkit.config import load_plan
    from drkit.evidence.recorder import identity
    from drkit.lab.aws_shaped import estate_port
    from drkit.targets import target

    for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("DRKIT_OPERATOR", "claims-to-be-the-cfo")
    aws_env = {"AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "x",
               "AWS_SECRET_ACCESS_KEY": "y", "AWS_REGION": "eu-west-1"}
    got = identity(aws=True, aws_env=aws_env)
    assert (got.name, got.source, got.self_asserted, got.aws_arn) == (
        MOTO_ARN, "aws-sts", False, MOTO_ARN)
    # No AWS answering: the operator's claim, marked as such, never an invented ARN.
    down = identity(aws=True, aws_env={**aws_env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    assert (down.name, down.source, down.self_asserted) == (
        "claims-to-be-the-cfo", "os-user", True)
    plan = load_plan(REPO / "drkit.yml")
    assert plan.environment("production").target == "aws"
    assert target(plan, "production").aws_env == {}  # the usual chain, this process's
    assert target(plan, "lab").aws_env is None  # not an AWS target
    from drkit.config import lab_config

    lab_aws = target(plan, "lab-aws").aws_env
    assert lab_aws is not None and lab_aws["AWS_ENDPOINT_URL"] == \
        f"http://127.0.0.1:{estate_port(lab_config(plan))}"


@pytest.mark.lab
# The session estate's build (up to 25 min against moto on a loaded machine) is charged to the
# first test that asks for it, and the drill and lab down come on top: pyproject's 900 s is too
# short (a passing run timed out in its teardown).
@pytest.mark.timeout(3600)
def test_a_drill_with_the_aws_example_adapters_runs_on_moto(lab_aws: AwsLab) -> None:
    """aws-example's own file and adapter choices, pointed at the session estate by an overlay
    with what only the lab has (its moto endpoint and the names Terraform gave the estate)."""
    root = lab_aws.root
    inv = root / "inv-aws-example"
    (inv / "group_vars" / "all").mkdir(parents=True, exist_ok=True)
    # In order: aws-example's file as shipped; over it the lab's own values (its hostname,
    # zone, entry point) and the estate's names on moto; last, aws-example's choices again.
    gv = inv / "group_vars" / "all"
    if not (inv / "hosts.yml").exists():
        (inv / "hosts.yml").symlink_to(LAB_AWS / "hosts.yml")
        (gv / "05-lab.yml").symlink_to(LAB_AWS / "group_vars" / "all" / "00-lab.yml")
        (gv / "10-moto.yml").symlink_to(LAB_AWS / "group_vars" / "all" / "10-aws.yml")
    shutil.copy(EXAMPLE / "group_vars" / "all.yml", gv / "00-example.yml")
    example = _vars(EXAMPLE / "group_vars" / "all.yml")
    (gv / "20-choices.yml").write_text(yaml.safe_dump(
        {k: example[k] for k in ("drkit_adapters", "drkit_target")}))
    data = yaml.safe_load(lab_aws.plan.read_text())
    data["environments"]["aws-example-on-moto"] = {
        "inventory": str(inv), "lab": True, "target": "aws", "flows": "flows/payments-lab.yml"}
    plan = root / "drkit-aws-example.yml"
    plan.write_text(yaml.safe_dump(data, sort_keys=False))
    drkit = [str(REPO / ".venv" / "bin" / "drkit")]
    env = {**lab_aws.env, "DRKIT_OPERATOR": "claims-to-be-the-cfo"}
    res = subprocess.run([*drkit, "drill", "run", "region-failover", "--env",
                          "aws-example-on-moto", "--json", "--plan", str(plan)], env=env,
                         capture_output=True, text=True, timeout=1500)
    out: dict[str, Any] = json.loads(res.stdout) if res.stdout.strip().startswith("{") else {}
    assert res.returncode == 0 and out.get("verdict") == "pass", (
        res.stdout[-4000:], res.stderr[-3000:])
    assert {p["status"] for p in out["phases"]} == {"ok"}, out["phases"]
    assert out["reconciliation"]["lost_count"] == 0 and out["reconciliation"]["acked_count"] > 0
    # The adapters that ran were aws-example's: the Terraform, RDS, Route53 and ASG steps.
    run = lab_aws.state_dir / "runs" / f"{out['id']}-region-failover"
    events = (run / "recovery" / "job_events.jsonl").read_text(errors="replace")
    for step in ("iac/terraform/", "data/rds/", "traffic/route53/", "compute/asg/"):
        assert f"adapters/{step}" in events, step
    # Who ran it: the caller identity moto's STS returned for the lab's credentials, observed;
    # not the name DRKIT_OPERATOR claims.
    shown = subprocess.run([*drkit, "evidence", "show", out["evidence"]["id"], "--json", "--plan",
                            str(plan)], env=env, capture_output=True, text=True, timeout=120)
    rec = json.loads(shown.stdout)
    rec = rec.get("record", rec)
    ident = rec["operator_identity"]
    assert rec["target_type"] == "aws" and rec["operator"] == MOTO_ARN, rec["operator"]
    assert ident["source"] == "aws-sts" and ident["self_asserted"] is False
    assert ident["aws_arn"] == MOTO_ARN
