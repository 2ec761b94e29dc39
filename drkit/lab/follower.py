"""The AWS-shaped lab's follower: the lab's real components follow moto's state (issue 14).

In the AWS-shaped lab (`drkit lab-aws up`, drkit.lab.aws_shaped) the drill acts only through
AWS APIs, against a moto server this process runs in-process, and the lab's real components
follow what those APIs changed, the way AWS's own components do:

- **Route53 -> entry point.** Clients follow DNS: the region named by the payments hostname's
  PRIMARY failover record (records are identified by role, and a failover flips their values)
  is where HAProxy, the lab's single entry point, sends traffic (its runtime API).
- **Auto Scaling -> payments instances.** A region's Auto Scaling group's desired capacity is
  how many payments API processes run in that region (started and stopped by pid).
- **Auto Scaling instances -> which process, at which version.** Each instance in a region's
  group is given one of the region's payments process slots; the process runs the version in
  the instance's `drkit-version` tag (its launch template's; none: the lab's version). When an
  instance is replaced (TerminateInstanceInAutoScalingGroup without decrementing), the slot's
  process is restarted at the new instance's version, behind HAProxy's drain and maintenance
  (an instance tagged drkit-lab-fault=unhealthy gets a process that fails its health check).
- **Target group -> HAProxy server state, and back.** A target deregistered from the region's
  target group is drained at HAProxy (no new requests); moto reports it `draining` until its
  sessions are done. A new instance is `initial` in DescribeTargetHealth until its process
  answers and HAProxy sees it UP: the follower plays the ALB's health checks, which moto
  does not run (it answers `healthy` for any registered running instance).
- **HTTPS listener -> the entry point's certificate.** The entry point serves the certificate
  the active region's HTTPS listener names (ModifyListener switches it): its body and key are
  read from moto's ACM and installed, and HAProxy reloaded through its master socket.
- **RDS -> PostgreSQL.** When a region's DB instance stops being a read replica
  (PromoteReadReplica), that region's PostgreSQL standby is promoted (its old primary is
  fenced first: stopped cleanly, so nothing writes to two primaries); when a region's DB
  instance becomes a read replica of the other region's (a failback seeds one), that region's
  PostgreSQL is rebuilt as a streaming standby of the other (playbooks/lab/follow-standby.yml).

Why in-process: moto 5.2.5's PromoteReadReplica flips an internal flag only; its
DescribeDBInstances keeps reporting the replica's source, so no API call can see a promotion.
The follower reads moto's backends directly, which only an emulator allows; the drill itself
never does (docs/targets.md says what a real account proves instead).

The follower writes what it sees and did to {state_dir}/aws/follower.json (atomically) and
its log to {state_dir}/aws/follower.log. It is started by drkit.lab.aws_shaped.up with the
lab's marker in its environment, so `drkit lab down` stops it with everything else.

    python -m drkit.lab.follower --config {state_dir}/aws/follower-config.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ACCOUNT = "123456789012"  # moto's default account
# An instance tagged drkit-lab-fault=unhealthy (through its launch template) runs a payments
# process that never passes its health check: how tests give a rolling patch a bad build.
LAB_FAULT_TAG = "drkit-lab-fault"


@dataclass
class Seen:
    """One look at moto: what each region's control plane says."""

    active: str | None = None  # the region the PRIMARY failover record names
    primary_record: str | None = None
    desired: dict[str, int] = field(default_factory=dict)  # region -> ASG desired capacity
    # region -> {"id", "replica_of" (source region or None), "status"}; absent: no DB instance
    db: dict[str, dict[str, Any]] = field(default_factory=dict)
    # region -> the group's InService instances, oldest first: [{"id", "version"}]
    instances: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    registered: dict[str, set[str]] = field(default_factory=dict)  # region -> target ids
    listener_cert: dict[str, str] = field(default_factory=dict)  # region -> HTTPS cert ARN


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _region_of(arn_or_id: str, default: str) -> str:
    parts = arn_or_id.split(":")
    return parts[3] if arn_or_id.startswith("arn:") and len(parts) > 3 else default


class Follower:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.sd = Path(cfg["state_dir"])
        self.regions = cfg["regions"]  # {"primary": r1, "secondary": r2}
        self.role_of = {v: k for k, v in self.regions.items()}
        self.events: list[dict[str, Any]] = []
        self.last_db: dict[str, dict[str, Any]] | None = None
        self.stop = threading.Event()
        self.errors = 0
        self._estate: dict[str, Any] | None = None
        self._estate_mtime = 0.0
        # Auto Scaling instances and the lab's processes (issue 14, rolling patch):
        self.slots: dict[str, dict[int, str]] = {}  # region -> slot -> instance id
        self.serving: dict[str, str | None] = {}  # process name -> the instance it stands for
        self.confirmed: set[str] = set()  # instances whose process HAProxy sees UP
        self.draining: set[str] = set()  # deregistered instances whose process still serves
        self.drained: set[str] = set()  # deregistered, out of rotation, process still there
        self.cert_arn: str | None = None  # the listener certificate the entry point serves
        self.pending: dict[str, str] = {}  # process name -> instance not yet seen UP
        self.maint: set[str] = set()  # processes we put in maintenance (back to ready on start)

    # ---- reading moto

    def look(self) -> Seen:
        from moto.autoscaling.models import autoscaling_backends
        from moto.rds.models import rds_backends
        from moto.route53.models import route53_backends

        seen = Seen()
        estate = self.estate()
        if not estate:
            return seen  # the estate is not built yet: nothing to follow
        regions = estate["regions"]
        r53 = route53_backends[ACCOUNT]["aws"]
        zone_name = estate["zone"].rstrip(".") + "."
        host = estate["hostname"].rstrip(".") + "."
        endpoints = {o["region_endpoint"].rstrip("."): r for r, o in regions.items()}
        for zone in list(r53.zones.values()):
            if zone.name != zone_name:
                continue
            for rr in list(zone.rrsets):
                if rr.name.rstrip(".") + "." != host or (rr.failover or "") != "PRIMARY":
                    continue
                values = [v["Value"] if isinstance(v, dict) else str(v) for v in rr.records]
                seen.primary_record = values[0] if values else None
                if seen.primary_record:
                    seen.active = endpoints.get(seen.primary_record.rstrip("."))
        for region, out in regions.items():
            asg = autoscaling_backends[ACCOUNT][region].autoscaling_groups.get(out["asg_name"])
            if asg is not None:
                seen.desired[region] = int(asg.desired_capacity or 0)
            if asg is not None:
                seen.instances[region] = [
                    {"id": st.instance.id,
                     "version": _tag(st.instance, "drkit-version"),
                     "fault": _tag(st.instance, LAB_FAULT_TAG)}
                    for st in list(asg.instance_states) if st.lifecycle_state == "InService"]
            self._look_lb(seen, region, out)
            db = rds_backends[ACCOUNT][region].databases.get(out["db_identifier"])
            if db is not None:
                src = db.source_db_instance_identifier if db.is_replica else None
                seen.db[region] = {"id": db.db_instance_identifier, "status": db.status,
                                   "replica_of": _region_of(src, region) if src else None}
        return seen

    def _look_lb(self, seen: Seen, region: str, out: dict[str, Any]) -> None:
        from moto.elbv2.models import elbv2_backends

        elb = elbv2_backends[ACCOUNT][region]
        tg = elb.target_groups.get(out.get("target_group_arn", ""))
        if tg is not None:
            seen.registered[region] = set(tg.targets)
        for lb in list(elb.load_balancers.values()):
            if lb.dns_name != out.get("lb_dns_name"):
                continue
            for listener in list(lb.listeners.values()):
                if listener.protocol == "HTTPS" and listener.certificate:
                    seen.listener_cert[region] = listener.certificate

    def estate(self) -> dict[str, Any] | None:
        """Terraform's outputs per region (aws/estate.json, written by `lab-aws up`)."""
        path = Path(self.cfg["estate_file"])
        try:
            mtime = path.stat().st_mtime
            if mtime != self._estate_mtime:
                self._estate = json.loads(path.read_text())
                self._estate_mtime = mtime
        except (OSError, ValueError):
            return None
        return self._estate

    # ---- making the lab match

    def note(self, what: str, **kw: Any) -> None:
        ev = {"at": _now(), "what": what, **kw}
        self.events = (self.events + [ev])[-100:]
        print(json.dumps(ev), flush=True)

    def follow_traffic(self, seen: Seen) -> str | None:
        from drkit.lab._runtime import runtime

        hp = self.cfg["haproxy"]
        try:
            active = runtime.haproxy_show_map(hp["socket"], hp["map"]).get("active")
        except runtime.HaproxyError:
            return None  # HAProxy is down: `lab up` restarts it, then we follow again
        if seen.active and seen.active != active:
            runtime.haproxy_command(hp["socket"], f"set map {hp['map']} active {seen.active}")
            runtime.write_atomic(hp["map"], f"active {seen.active}\n")
            self.note("traffic", region=seen.active, was=active, record=seen.primary_record)
            return seen.active
        return active

    def follow_capacity(self, seen: Seen) -> dict[str, int]:
        """Each InService instance of a region's group holds one of its process slots; a slot
        with no instance has no process. A replaced instance's slot is drained at HAProxy,
        restarted at the new instance's version and put back once it answers."""
        from drkit.lab._runtime import daemons

        running: dict[str, int] = {}
        for region, desired in seen.desired.items():
            specs = sorted((s for s in self.cfg["services"] if s["region"] == region),
                           key=lambda s: s["instance"])
            insts = seen.instances.get(region, [])
            slots = self._assign(region, [i["id"] for i in insts], specs)
            version = {i["id"]: i["version"] for i in insts}
            fault = {i["id"]: i.get("fault") for i in insts}
            registered = seen.registered.get(region)
            n = 0
            for spec in specs:
                pid = daemons.current_pid(spec["pidfile"])
                iid = slots.get(spec["instance"])
                if pid is not None and spec["name"] not in self.serving:
                    self.serving[spec["name"]] = iid  # running before we looked: adopt it
                    if iid:
                        self.confirmed.add(iid)
                was = self.serving.get(spec["name"])
                if (registered is not None and was and was not in registered
                        and pid is not None and was not in self.drained):
                    # Deregistered from the target group: out of rotation once its requests
                    # are done (the deregistration delay), while it still runs.
                    self._drain(spec, was)
                    self._wait_drained(spec)
                if iid is None and pid is not None:
                    # Capacity lost (scale-in, a region's fault): the process goes at once.
                    daemons.stop(spec["name"], pid)
                    daemons.forget(spec["pidfile"])
                    self.confirmed.discard(was or "")
                    self.serving[spec["name"]] = None
                    self.note("instance-stopped", region=region, name=spec["name"], pid=pid,
                              desired=desired, instance=was)
                    pid = None
                elif iid is not None and (pid is None or was != iid) and not self.stop.is_set():
                    # (Never once asked to stop: lab down stops the instances after it.)
                    pid = self._start(spec, iid, version.get(iid), pid, was, region, desired,
                                      unhealthy=fault.get(iid) == "unhealthy")
                n += pid is not None
            running[region] = n
        return running

    def _assign(self, region: str, ids: list[str], specs: list[dict[str, Any]]) -> dict[int, str]:
        """Keep each instance in its slot; a new instance takes the lowest free one."""
        slots = self.slots.setdefault(region, {})
        for k, iid in list(slots.items()):
            if iid not in ids:
                del slots[k]
        free = [s["instance"] for s in specs if s["instance"] not in slots]
        for iid in ids:
            if iid not in slots.values() and free:
                slots[free.pop(0)] = iid
        return slots

    def _drain(self, spec: dict[str, Any], iid: str) -> None:
        from drkit.lab._runtime import runtime

        if iid in self.draining or iid in self.drained:
            return
        self.draining.add(iid)
        self.confirmed.discard(iid)
        try:
            runtime.haproxy_command(self.cfg["haproxy"]["socket"],
                                    f"set server {spec['backend']}/{spec['server']} state drain")
        except runtime.HaproxyError:
            pass  # HAProxy down: nothing to drain
        self.note("instance-draining", region=spec["region"], name=spec["name"], instance=iid)

    def _wait_drained(self, spec: dict[str, Any], timeout: float = 15.0) -> None:
        """Until the server's in-flight requests are done (its deregistration delay), then out
        of rotation (maintenance), so its process can stop without failing a request."""
        import time

        from drkit.lab._runtime import runtime

        sock = self.cfg["haproxy"]["socket"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if _sessions(runtime.haproxy_command(sock, "show stat"), spec) == 0:
                    break
            except runtime.HaproxyError:
                break
            time.sleep(0.1)
        with contextlib.suppress(runtime.HaproxyError):
            runtime.haproxy_command(sock, f"set server {spec['backend']}/{spec['server']} "
                                          "state maint")
        self.maint.add(spec["name"])
        was = self.serving.get(spec["name"])
        if was in self.draining:
            self.draining.discard(was)
            self.drained.add(was)
            self.note("instance-drained", region=spec["region"], name=spec["name"], instance=was)

    def _start(self, spec: dict[str, Any], iid: str, version: str | None, pid: int | None,
               was: str | None, region: str, desired: int, unhealthy: bool = False,
               ) -> int | None:
        """Run the slot's process for instance `iid` at its version. When it replaces another
        instance's process, that one is drained first, and the new one goes back into HAProxy's
        rotation once it listens; HAProxy's checks then decide when it is UP (confirm_up)."""
        from drkit.lab._runtime import daemons, runtime

        run = dict(spec)
        if version:
            run["argv"] = [*spec["argv"][:-1], version]  # argv ends `--version V`
        if unhealthy:  # the lab's fault tag: a build whose database settings are wrong
            run["argv"] = [self._bad_dsn() if a == spec["dsn_file"] else a for a in run["argv"]]
        replacing = pid is not None or spec["name"] in self.maint
        if pid is not None:  # the old instance's process goes first, drained (as AWS does)
            if was not in self.drained and spec["name"] not in self.maint:
                self._drain(spec, was or "")
                self._wait_drained(spec)
            daemons.stop(spec["name"], pid)
            daemons.forget(spec["pidfile"])
            self.drained.discard(was or "")
            self.note("instance-replaced", region=region, name=spec["name"], instance=was,
                      by=iid)
        spawned = daemons.spawn(run)
        self.serving[spec["name"]] = iid
        self.pending[spec["name"]] = iid
        self.note("instance-started", region=region, name=spec["name"], pid=spawned.pid,
                  desired=desired, instance=iid, version=version)
        if replacing:
            # Back into rotation only once it passes the health check itself: HAProxy puts a
            # server leaving maintenance UP at once, before its own check has run (seen: a
            # process with its database down took requests for a second).
            if self._passes_health_check(spec, timeout=15):
                with contextlib.suppress(runtime.HaproxyError):
                    runtime.haproxy_command(self.cfg["haproxy"]["socket"],
                                            f"set server {spec['backend']}/{spec['server']} "
                                            "state ready")
                self.maint.discard(spec["name"])
            else:
                self.note("instance-unhealthy", region=region, name=spec["name"], instance=iid)
        return int(spawned.pid)

    def _passes_health_check(self, spec: dict[str, Any], timeout: float) -> bool:
        import time

        from drkit.lab._runtime import runtime

        deadline = time.monotonic() + timeout
        while not self.stop.is_set():
            status, _ = runtime.http_get(f"http://127.0.0.1:{spec['port']}/healthz", timeout=1)
            if status == 200:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)
        return False

    def _bad_dsn(self) -> str:
        """A DSN file naming a database that does not answer: the process starts and listens,
        and its /healthz says the database is down, so it never passes a health check."""
        from drkit.lab._runtime import runtime

        path = self.sd / "aws" / "unhealthy.dsn"
        runtime.write_atomic(str(path), "host=127.0.0.1 port=1 dbname=payments user=payments "
                                        "password=unhealthy\n", mode=0o600)
        return str(path)

    def confirm_up(self) -> None:
        """A started instance is healthy in its target group once HAProxy sees it UP."""
        from drkit.lab._runtime import runtime

        if not self.pending:
            return
        try:
            servers = runtime.haproxy_servers(self.cfg["haproxy"]["socket"])
        except runtime.HaproxyError:
            return
        by_name = {s["name"]: s for s in self.cfg["services"]}
        for name, iid in list(self.pending.items()):
            spec = by_name[name]
            st = servers.get(spec["backend"], {}).get(spec["server"]) or {}
            if self.serving.get(name) != iid:
                del self.pending[name]
            elif st.get("op") == "UP" and st.get("admin") == "ready" and name not in self.maint:
                self.confirmed.add(iid)
                del self.pending[name]

    # ---- the entry point's certificate follows the active region's HTTPS listener

    def follow_cert(self, seen: Seen) -> None:
        from moto.acm.models import acm_backends

        from drkit.lab._runtime import runtime

        region = seen.active or self.regions["primary"]
        arn = seen.listener_cert.get(region)
        tls = self.cfg.get("tls")
        if not arn or not tls or arn == self.cert_arn:
            return
        bundle = acm_backends[ACCOUNT][_region_of(arn, region)].get_certificate(arn)
        cert = _text(bundle.cert)
        try:
            installed = Path(tls["cert"]).read_text()
        except OSError:
            installed = ""
        if installed.strip() != cert.strip():
            runtime.write_atomic(tls["key"], _text(bundle.key), mode=0o600)
            runtime.write_atomic(tls["cert"], cert if cert.endswith("\n") else cert + "\n")
            # A master-worker reload: the old worker finishes its connections.
            runtime.haproxy_command(self.cfg["haproxy"]["master_socket"], "reload",
                                    timeout=10.0)
            self.note("certificate", region=region, arn=arn)
        self.cert_arn = arn

    def target_health(self, target_id: str, registered: bool) -> tuple[str, str, str] | None:
        """What the lab's own health checks say of an instance target (None: moto's answer).
        Called from moto's request threads (the hook installed in main)."""
        if not target_id.startswith("i-"):
            return None
        if not registered:
            # Deregistered while serving: draining until the follower took it out of rotation.
            if target_id in self.draining or target_id in self.confirmed:
                return ("draining", "Target.DeregistrationInProgress",
                        "Target deregistration is in progress")
            return None
        if target_id not in self.confirmed:
            return ("initial", "Elb.RegistrationInProgress",
                    "Target registration is in progress")
        return None

    def follow_data(self, seen: Seen) -> None:
        last, self.last_db = self.last_db, dict(seen.db)
        if last is None:
            return  # the first look: the lab was built to match it
        for region, db in seen.db.items():
            before = last.get(region)
            if before is not None and before["replica_of"] and not db["replica_of"]:
                self.promote(region, was_replica_of=before["replica_of"])
            elif db["replica_of"] and db["replica_of"] != region and (
                    before is None or before["replica_of"] != db["replica_of"]):
                self.make_standby(region, of=db["replica_of"])

    def promote(self, region: str, was_replica_of: str) -> None:
        from drkit.lab._runtime import pgutil

        pg = self.cfg["pg"]
        me, other = pg[region], pg[was_replica_of]
        info = pgutil.info(me["port"], timeout=2, host=self.cfg["pg_host"])
        if info["reachable"] and not info["in_recovery"]:
            self.note("db-promoted", region=region, already=True)
            return
        # Fence the old writer first: one primary at a time (a real failover loses it anyway).
        other_info = pgutil.info(other["port"], timeout=2, host=self.cfg["pg_host"])
        if other_info["reachable"] and not other_info["in_recovery"]:
            self._pg_ctl(other, "stop", "-m", "fast")
            self.note("db-fenced", region=was_replica_of)
        self._pg_ctl(me, "promote", "-w", "-t", "60")
        self.note("db-promoted", region=region)

    def _pg_ctl(self, pg: dict[str, Any], *args: str) -> None:
        from drkit.lab._runtime import pgutil

        argv = [f"{self.cfg['pg_bin_dir']}/pg_ctl", "-D", pg["pgdata"], *args]
        rc, out = _run_as(pgutil, self.cfg["os_user"], argv)
        if rc != 0:
            raise RuntimeError(f"pg_ctl {' '.join(args)} {pg['pgdata']}: {out}")

    def make_standby(self, region: str, of: str) -> None:
        """Rebuild `region`'s PostgreSQL as a standby of `of`'s, with the lab's own playbook
        (pg_basebackup, the lab's settings); off any recovery clock (it seeds a replica)."""
        from drkit.config import load_plan
        from drkit.lab import run

        plan = load_plan(self.cfg["plan"])
        result = run(plan, "playbooks/lab/follow-standby.yml",
                     extravars={"drkit_follow_role": self.role_of[region],
                                "drkit_follow_of_role": self.role_of[of]})
        if not result.ok:
            raise RuntimeError(f"rebuilding {region}'s database as a standby of {of} failed "
                               f"(output: {result.stdout_path})")
        self.note("db-standby", region=region, of=of)

    # ---- the loop

    def write_status(self, seen: Seen, active: str | None, running: dict[str, int]) -> None:
        from drkit.lab._runtime import runtime

        doc = {"at": _now(), "pid": os.getpid(), "route53_active": seen.active,
               "primary_record": seen.primary_record, "haproxy_active": active,
               "asg_desired": seen.desired, "instances_running": running, "rds": seen.db,
               "instances": {r: [{**i, "slot": next((k for k, v in self.slots.get(r, {}).items()
                                                     if v == i["id"]), None)}
                                 for i in insts] for r, insts in seen.instances.items()},
               "listener_cert": seen.listener_cert, "serving_cert": self.cert_arn,
               # every event kept (the last 100): a rolling patch alone makes a dozen, and a
               # reader checking what one runbook did must not lose its first ones
               "errors": self.errors, "events": self.events}
        runtime.write_atomic(str(self.sd / "aws" / "follower.json"),
                             json.dumps(doc, indent=1) + "\n")

    def run(self) -> None:
        interval = float(self.cfg.get("interval_s", 0.3))
        while not self.stop.is_set():
            try:
                seen = self.look()
                self.follow_data(seen)
                active = self.follow_traffic(seen)
                running = self.follow_capacity(seen)
                self.confirm_up()
                self.follow_cert(seen)
                self.write_status(seen, active, running)
            except Exception as e:  # noqa: BLE001 - the follower outlives a bad tick
                self.errors += 1
                self.note("error", error=f"{type(e).__name__}: {e}")
                traceback.print_exc()
            self.stop.wait(interval)


def _tag(instance: Any, key: str) -> str | None:
    for t in instance.get_tags() or []:
        if t.get("key", t.get("Key")) == key:
            return str(t.get("value", t.get("Value")))
    return None


def _text(data: Any) -> str:
    return data.decode() if isinstance(data, bytes) else str(data)


def _sessions(csv: str, spec: dict[str, Any]) -> int:
    """scur (current sessions) of the spec's server in `show stat` CSV."""
    for line in csv.splitlines():
        cols = line.split(",")
        if len(cols) > 4 and cols[0] == spec["backend"] and cols[1] == spec["server"]:
            return int(cols[4] or 0)
    return 0


def _install_health_hook(follower: Follower) -> None:
    """moto answers `healthy` for every registered running instance and forgets a deregistered
    one at once; AWS's load balancer health-checks targets and drains deregistered ones. The
    follower plays that part (it runs moto in-process), so DescribeTargetHealth says what the
    lab's entry point really does: `initial` until a new instance's process is UP, `draining`
    while a deregistered one still finishes its requests."""
    from moto.elbv2.models import FakeHealthStatus, FakeTargetGroup

    original = FakeTargetGroup.health_for

    def health_for(self: Any, target: dict[str, Any], ec2_backend: Any) -> Any:
        status = original(self, target, ec2_backend)
        if status.status not in ("healthy", "unused"):
            return status
        said = follower.target_health(str(target["Id"]), target["Id"] in self.targets)
        if said is None:
            return status
        return FakeHealthStatus(status.instance_id, status.port, status.health_check_port,
                                *said)

    FakeTargetGroup.health_for = health_for  # type: ignore[method-assign]


def _run_as(pgutil: Any, user: str, argv: list[str]) -> tuple[int, str]:
    res = pgutil.run_as(user, argv, timeout=120)
    out = res.stdout.decode("utf-8", "replace") if isinstance(res.stdout, bytes) else ""
    return int(res.returncode), out.strip()[-500:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="drkit.lab.follower")
    ap.add_argument("--config", required=True)
    args = ap.parse_args(argv)
    cfg = json.loads(Path(args.config).read_text())
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a line per API call

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(cfg["moto_port"]),
                                verbose=False)
    server.start()
    follower = Follower(cfg)
    _install_health_hook(follower)

    def _stop(_sig: int, _frm: Any) -> None:
        follower.stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(json.dumps({"at": _now(), "what": "started", "moto_port": cfg["moto_port"]}),
          flush=True)
    try:
        follower.run()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
