"""The AWS-shaped lab (issue 14): a Terraform-built estate on moto that the lab follows.

`drkit lab-aws up` (up below) builds, over a running lab:

1. the follower (drkit.lab.follower): a moto server for the estate's control plane on
   port_base + ESTATE_PORT_OFFSET, and the loop that makes the lab's real components follow it
   (Route53 -> HAProxy, Auto Scaling -> payments instances and their versions, target group ->
   HAProxy server states, the HTTPS listener's ACM certificate -> the entry point's, RDS ->
   PostgreSQL);
2. the estate, with iac/terraform/regional applied to that moto once per region, each region in
   its own workspace, the state in an S3 bucket with DynamoDB locking in a third region
   (playbooks/lab/aws-estate.yml: `terraform init`, `apply` and `output` run directly):
   network, security groups, the RDS writer and its cross-region read replica, a load
   balancer with an HTTPS listener whose certificate is the lab entry point's, imported into
   ACM, and a target group, an Auto Scaling group, and the Route53 failover records with a
   health check.

Then the `lab-aws` environment's drill (inventories/lab-aws) acts only through AWS APIs on
that moto, and its smoke flows and canary go through the lab's entry point: payments flow again
only if what the drill did through the APIs really moved the lab.

State (under the lab's state directory): aws/follower-config.json, aws/follower.{pid,log},
aws/follower.json (what the follower sees and did), aws/estate.json (Terraform's outputs per
region), aws/terraformrc (Terraform's CLI configuration), aws/terraform/<region>/ (TF_DATA_DIR).
`drkit lab down` stops the follower with the rest (it carries the lab's marker).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from drkit.config import LabConfig, Plan
    from drkit.engine import RunListener

ESTATE_PORT_OFFSET = 5  # port_base + 5: free in LabConfig.ports' layout (moto .. stats = +0..+4)
ESTATE_PLAYBOOK = "playbooks/lab/aws-estate.yml"
ENVIRONMENT = "lab-aws"  # the shipped plan's AWS-shaped environment
PROVIDER = "registry.terraform.io/hashicorp/aws"
# Where Terraform providers are looked for on disk (a filesystem mirror: the registry may not
# be reachable). DRKIT_TF_PLUGIN_MIRROR overrides.
MIRROR_CANDIDATES = ("/opt/tf-plugins", "~/.terraform.d/plugins",
                     "~/.local/share/terraform/plugins", "/usr/local/share/terraform/plugins",
                     "/usr/share/terraform/plugins")


@dataclass(frozen=True)
class EstateStatus:
    up: bool
    message: str
    follower_pid: int | None
    estate: dict[str, Any] = field(default_factory=dict)
    follower: dict[str, Any] = field(default_factory=dict)
    duration_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"up": self.up, "message": self.message, "follower_pid": self.follower_pid,
                "estate": self.estate, "follower": self.follower,
                "duration_s": None if self.duration_s is None else round(self.duration_s, 3)}


def estate_port(cfg: LabConfig) -> int:
    return cfg.port_base + ESTATE_PORT_OFFSET


def aws_dir(cfg: LabConfig) -> Path:
    return cfg.state_dir / "aws"


# ---------------------------------------------------------------------------------------------
# Terraform: the binary and its provider mirror


def terraform_binary() -> str:
    """Terraform (or OpenTofu, DRKIT_TF_BINARY=tofu) on PATH, or one clear line saying what is
    missing."""
    from drkit.errors import EnvironmentProblem

    name = os.environ.get("DRKIT_TF_BINARY", "terraform")
    path = shutil.which(name)
    if path is None:
        raise EnvironmentProblem(
            f"{name} is not on PATH: install Terraform >= 1.6 (or OpenTofu, and set "
            "DRKIT_TF_BINARY=tofu); scripts/install checks for it")
    return path


def provider_mirror() -> Path:
    """The filesystem mirror that holds the hashicorp/aws provider, or one clear line."""
    from drkit.errors import EnvironmentProblem

    given = os.environ.get("DRKIT_TF_PLUGIN_MIRROR")
    candidates = [given] if given else list(MIRROR_CANDIDATES)
    for c in candidates:
        root = Path(os.path.expanduser(c))
        if (root / PROVIDER).is_dir() and any((root / PROVIDER).iterdir()):
            return root
    raise EnvironmentProblem(
        f"no filesystem mirror with the {PROVIDER} provider (looked in "
        f"{', '.join(candidates)}): put the provider there (terraform providers mirror DIR on "
        "a machine that reaches the registry) and set DRKIT_TF_PLUGIN_MIRROR=DIR")


def write_cli_config(path: Path, mirror: Path) -> Path:
    """Terraform's CLI configuration: providers from the mirror, never from the network."""
    from drkit.lab._runtime import runtime

    text = (
        "# Written by drkit (drkit.lab.aws_shaped): providers come from a local filesystem\n"
        "# mirror; the registry is not reachable from every machine drkit runs on.\n"
        "provider_installation {\n"
        "  filesystem_mirror {\n"
        f"    path    = {json.dumps(str(mirror))}\n"
        f"    include = [{json.dumps(PROVIDER)}]\n"
        "  }\n"
        "  direct {\n"
        f"    exclude = [{json.dumps(PROVIDER)}]\n"
        "  }\n"
        "}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    runtime.write_atomic(str(path), text)
    return path


# ---------------------------------------------------------------------------------------------
# up / status


def follower_config(plan: Plan, cfg: LabConfig) -> dict[str, Any]:
    from drkit import lab

    sec = lab._security()
    return {
        "plan": str(plan.path),
        "state_dir": str(cfg.state_dir),
        "moto_port": estate_port(cfg),
        "regions": {"primary": cfg.primary_region, "secondary": cfg.secondary_region},
        "estate_file": str(aws_dir(cfg) / "estate.json"),
        "haproxy": {"socket": str(cfg.state_dir / "haproxy" / "admin.sock"),
                    "master_socket": str(cfg.state_dir / "haproxy" / "master.sock"),
                    "map": str(cfg.state_dir / "haproxy" / "active.map")},
        # The entry point's certificate and key (HAProxy loads entry.pem and entry.pem.key):
        # the follower installs what the active region's HTTPS listener names in ACM.
        "tls": {"cert": str(cfg.state_dir / "tls" / "entry.pem"),
                "key": str(cfg.state_dir / "tls" / "entry.pem.key")},
        "services": lab.services(cfg),
        "pg": {r: {"port": cfg.ports[f"pg_{role}"],
                   "pgdata": str(cfg.state_dir / "pg" / r / "data")}
               for role, r in (("primary", cfg.primary_region),
                               ("secondary", cfg.secondary_region))},
        "pg_host": str(sec.pg_socket_dir(cfg)),
        "pg_bin_dir": str(lab.PG_BIN_DIR),
        "os_user": cfg.os_user,
    }


def _follower_spec(plan: Plan, cfg: LabConfig) -> dict[str, Any]:
    from drkit import lab

    d = aws_dir(cfg)
    return {"name": "follower", "pidfile": str(d / "follower.pid"),
            "log": str(d / "follower.log"), "wait_tcp": estate_port(cfg),
            "env": {**lab.envvars(plan), "PYTHONUNBUFFERED": "1"},
            "argv": [sys.executable, "-m", "drkit.lab.follower", "--config",
                     str(d / "follower-config.json")]}


def start_follower(plan: Plan, cfg: LabConfig) -> int:
    """Start the follower (and with it the estate's moto) unless it runs; return its pid."""
    from drkit.errors import EnvironmentProblem
    from drkit.lab._runtime import daemons, runtime

    d = aws_dir(cfg)
    d.mkdir(parents=True, exist_ok=True)
    runtime.write_atomic(str(d / "follower-config.json"),
                         json.dumps(follower_config(plan, cfg), indent=1) + "\n", mode=0o600)
    spec = _follower_spec(plan, cfg)
    pid: int | None = daemons.current_pid(spec["pidfile"])
    if pid is not None:
        return pid
    if runtime.port_listening(estate_port(cfg)):
        raise EnvironmentProblem(
            f"port {estate_port(cfg)} (the AWS-shaped lab's moto) is in use by another "
            "process: stop it, or move the lab with DRKIT_LAB_PORT_BASE")
    spawned = daemons.spawn(spec)
    try:
        daemons.wait_all([(spec, spawned.pid, spawned)], timeout=60)
    except daemons.DaemonError as e:
        raise EnvironmentProblem(f"the follower did not start: {e}") from None
    return int(spawned.pid)


def up(plan: Plan, listener: RunListener | None = None) -> EstateStatus:
    """The lab, the follower and the Terraform-built estate; idempotent (Terraform applies
    nothing when the estate matches the module)."""
    from drkit import lab
    from drkit.errors import RunFailed

    started = time.monotonic()
    # issue 17: the follower starts processes on this machine's loopback, so `auto` is local here.
    lab.pin_topology(plan, "local", "the AWS-shaped lab runs on loopback (its follower)")
    cfg = lab.config(plan)
    tf = terraform_binary()
    mirror = provider_mirror()
    with lab._lock(plan, cfg, "lab-aws up"):
        lab.up(plan, listener=listener)
        write_cli_config(aws_dir(cfg) / "terraformrc", mirror)
        start_follower(plan, cfg)
        failed: list[str] = []
        # Twice at most: an apply that fails under load can leave its state lock behind (its
        # release failed too), and the playbook's own retries then all fail on that lock. The
        # second run releases it first (tf_backend release_locks) and Terraform converges.
        for _ in range(2):
            result = lab.run(plan, ESTATE_PLAYBOOK, listener=listener,
                             inventory=plan.inventory(environment(plan)),
                             extravars={"drkit_tf_binary": tf})
            if result.ok:
                break
            what = (str(result.failure) if result.failure
                    else f"ansible-playbook exited {result.rc}")
            failed.append(f"{what} (output: {result.stdout_path})")
        else:
            raise RunFailed("lab-aws up: building the estate failed twice: "
                            + "; then ".join(failed))
        st = wait_converged(plan, timeout=60)
    if not st.up:
        raise RunFailed(f"lab-aws up: {st.message}")
    again = f" (the first build failed: {failed[0]}; the second converged)" if failed else ""
    return EstateStatus(True, f"AWS-shaped lab up: {st.message}{again}", st.follower_pid,
                        st.estate, st.follower, time.monotonic() - started)


def environment(plan: Plan) -> str:
    """The plan's AWS-shaped lab environment: `lab-aws`, else the first lab environment whose
    inventory sets drkit_target: lab-aws."""
    from drkit.errors import PlanError

    envs = plan.model.environments
    if ENVIRONMENT in envs and envs[ENVIRONMENT].lab:
        return ENVIRONMENT
    raise PlanError(f"{plan.path.name}: no environment {ENVIRONMENT!r} with 'lab: true' (the "
                    "AWS-shaped lab; see drkit.yml)")


def status(plan: Plan) -> EstateStatus:
    """What the follower last saw and did, and whether the lab matches the estate."""
    from drkit import lab
    from drkit.lab._runtime import daemons

    cfg = lab.config(plan)
    d = aws_dir(cfg)
    pid = daemons.current_pid(str(d / "follower.pid"))
    estate = _read_json(d / "estate.json")
    seen = _read_json(d / "follower.json")
    if pid is None:
        return EstateStatus(False, "the follower is not running: `drkit lab-aws up`", None,
                            estate, seen)
    if not estate:
        return EstateStatus(False, "the estate is not built: `drkit lab-aws up`", pid, estate,
                            seen)
    problems = []
    if not seen or time.time() - _age_base(seen) > 10:
        problems.append("the follower has not reported for 10s")
    else:
        if seen.get("route53_active") != seen.get("haproxy_active"):
            problems.append(f"Route53 names {seen.get('route53_active')}, the entry point "
                            f"sends to {seen.get('haproxy_active')}")
        for region, want in (seen.get("asg_desired") or {}).items():
            have = (seen.get("instances_running") or {}).get(region)
            if min(int(want), cfg.instances) != have:
                problems.append(f"{region}: Auto Scaling wants {want}, {have} run")
    ok = not problems
    msg = ("following: Route53 -> " + str(seen.get("route53_active")) + ", capacity " +
           ", ".join(f"{r} {n}" for r, n in (seen.get("instances_running") or {}).items())
           ) if ok else "; ".join(problems)
    return EstateStatus(ok, msg, pid, estate, seen)


def wait_converged(plan: Plan, timeout: float) -> EstateStatus:
    deadline = time.monotonic() + timeout
    while True:
        st = status(plan)
        if st.up or time.monotonic() > deadline:
            return st
        time.sleep(0.3)


def _age_base(seen: dict[str, Any]) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(seen["at"]).replace("Z", "+00:00")).timestamp()
    except (KeyError, ValueError):
        return 0.0


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
