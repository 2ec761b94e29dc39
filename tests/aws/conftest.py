"""The AWS-shaped lab for tests (issue 14): ONE per pytest session, shared by every test here.

`lab_aws` builds a lab of its own (own state directory, own free port range, 2 payments
instances per region) with `drkit lab-aws up`: the follower and its moto server, and the estate
applied with Terraform (slow against moto: a few minutes, once). Every drkit command runs as a
subprocess with this lab's DRKIT_LAB_* variables, so it never touches the session `lab`
fixture's lab (tests/conftest.py) or its environment. While the estate is applied, a thread
watches the Terraform lock table, so a test can tell that the state was locked during the apply.
At the end the lab is taken down (`drkit lab down`: the follower carries the lab's marker).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, free_port_base

DRKIT = str(REPO / ".venv" / "bin" / "drkit")
STATE_REGION = "eu-north-1"  # inventories/lab-aws: drkit_tf_state.region
LOCK_TABLE = "drkit-lab-tflock"
STATE_BUCKET = "drkit-lab-tfstate"


@dataclass
class AwsLab:
    root: Path  # the plan's folder (content symlinked from the repository)
    env: dict[str, str]
    port_base: int
    locks_seen: list[dict[str, Any]] = field(default_factory=list)

    @property
    def plan(self) -> Path:
        return self.root / "drkit.yml"

    @property
    def state_dir(self) -> Path:
        return Path(self.env["DRKIT_LAB_DIR"])

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port_base + 5}"

    def client(self, service: str, region: str) -> Any:
        import boto3

        return boto3.client(service, region_name=region, endpoint_url=self.endpoint,
                            aws_access_key_id="drkit-lab",
                            aws_secret_access_key="drkit-lab-not-a-secret")

    def drkit(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run([DRKIT, *args, "--plan", str(self.plan)], env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def estate(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.state_dir / "aws" / "estate.json").read_text())
        return data

    def follower(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(
            (self.state_dir / "aws" / "follower.json").read_text())
        return data


def _watch_locks(lab: AwsLab, stop: threading.Event) -> None:
    """Record every Terraform lock item (LockID without -md5, with Info) seen in the table.

    Once a second, with one client: an apply holds its lock for its whole run (a minute and
    more against moto). A new client per scan every 0.5 s cost 8 ms of CPU a scan, this 3 ms
    (client and moto), for the whole estate build (about 300 s)."""
    ddb = lab.client("dynamodb", STATE_REGION)
    while not stop.is_set():
        try:
            items = ddb.scan(TableName=LOCK_TABLE)["Items"]
        except Exception:  # noqa: BLE001 - moto or the table not there yet
            items = []
        for it in items:
            lock_id = it.get("LockID", {}).get("S", "")
            if "Info" in it and not lock_id.endswith("-md5"):
                info = json.loads(it["Info"]["S"])
                if all(info.get("ID") != s.get("ID") for s in lab.locks_seen):
                    lab.locks_seen.append({"lock_id": lock_id, **info})
        stop.wait(1.0)


@pytest.fixture(scope="session")
def lab_aws() -> Iterator[AwsLab]:
    if shutil.which("terraform") is None:
        pytest.fail("terraform is not on PATH (the AWS-shaped lab builds its estate with it)")
    root = Path(tempfile.mkdtemp(prefix="drkit-aws-plan-"))
    for name in ("playbooks", "inventories", "ansible.cfg", "iac"):
        (root / name).symlink_to(REPO / name)
    data = yaml.safe_load((REPO / "drkit.yml").read_text())
    # lab-aws-broken: the same lab with the Route53 flip broken (it names a target nobody
    # serves), and no Terraform plan in its preflight (the drift test covers that).
    broken = root / "inv-broken"
    (broken / "group_vars" / "all").mkdir(parents=True)
    (broken / "hosts.yml").symlink_to(REPO / "inventories" / "lab-aws" / "hosts.yml")
    for f in ("00-lab.yml", "10-aws.yml"):
        (broken / "group_vars" / "all" / f).symlink_to(
            REPO / "inventories" / "lab-aws" / "group_vars" / "all" / f)
    (broken / "group_vars" / "all" / "20-broken.yml").write_text(yaml.safe_dump({
        "drkit_tf_drift_workspaces": [],
        "drkit_entry_follow_timeout_s": 5,
        "drkit_region_endpoints": {  # the shipped plan's regions
            "eu-west-1": "{{ drkit_estate.regions['eu-west-1'].region_endpoint }}",
            "eu-central-1": "nowhere.invalid"}}))
    data["environments"]["lab-aws-broken"] = {"inventory": "inv-broken", "lab": True}
    # The AWS path makes more calls than the lab's direct one (Route53 read back, describes),
    # each an Ansible task; on a loaded 2-core box it measured 33s against the plan's 30s.
    # These tests prove the mechanism; the RTO a real estate reaches is its own measurement.
    data["services"]["payments"]["rto"] = "5m"
    data["evidence"]["store"] = "./evidence"
    data["evidence"]["signing_key"] = "keys/evidence.key"
    (root / "drkit.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    state = Path(tempfile.mkdtemp(prefix="drkit-aws-lab-", dir="/var/tmp"))
    state.chmod(0o755)
    base = free_port_base()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRKIT_")}
    env.update(DRKIT_LAB_DIR=str(state), DRKIT_LAB_PORT_BASE=str(base),
               DRKIT_LAB_INSTANCES="2", DRKIT_PLAN=str(root / "drkit.yml"))
    lab = AwsLab(root, env, base)
    subprocess.run([DRKIT, "evidence", "keygen", "-o", str(root / "keys" / "evidence.key")],
                   check=True, capture_output=True, env=env)
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_locks, args=(lab, stop), daemon=True)
    watcher.start()
    try:
        up = lab.drkit("lab-aws", "up", timeout=1500)
        if up.returncode != 0:  # keep what Ansible said: the state directory goes at the end
            kept = Path(tempfile.mkdtemp(prefix="drkit-aws-failed-up-"))
            shutil.copytree(state / "runs", kept / "runs", dirs_exist_ok=True)
            # and what Terraform said, in the test log: a CI machine's files are not kept
            said = "".join(p.read_text(errors="replace")[-4000:]
                           for p in sorted(kept.glob("runs/*/stdout"))[-1:])
            pytest.fail(f"lab-aws up failed (runs kept in {kept}):\n{up.stdout[-3000:]}\n"
                        f"{up.stderr[-3000:]}\n{said}")
        stop.set()
        yield lab
    finally:
        stop.set()
        down = lab.drkit("lab", "down", timeout=300)
        shutil.rmtree(root, ignore_errors=True)
        assert down.returncode == 0, f"lab down failed: {down.stdout}\n{down.stderr}"
        time.sleep(0.5)
        assert not any((state / d).exists() for d in ("pg", "services")), "lab state left behind"
        shutil.rmtree(state, ignore_errors=True)
