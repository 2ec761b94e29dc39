"""The AWS-shaped lab's follower: the lab's real components follow moto's state (issue 14).

In the AWS-shaped lab (`drkit lab-aws up`, drkit.lab.aws_shaped) the drill acts only through
AWS APIs, against a moto server this process runs in-process, and the lab's real components
follow what those APIs changed, the way AWS's own components do:

- **Route53 -> entry point.** Clients follow DNS: the region named by the payments hostname's
  PRIMARY failover record (records are identified by role, and a failover flips their values)
  is where HAProxy, the lab's single entry point, sends traffic (its runtime API).
- **Auto Scaling -> payments instances.** A region's Auto Scaling group's desired capacity is
  how many payments API processes run in that region (started and stopped by pid).
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


@dataclass
class Seen:
    """One look at moto: what each region's control plane says."""

    active: str | None = None  # the region the PRIMARY failover record names
    primary_record: str | None = None
    desired: dict[str, int] = field(default_factory=dict)  # region -> ASG desired capacity
    # region -> {"id", "replica_of" (source region or None), "status"}; absent: no DB instance
    db: dict[str, dict[str, Any]] = field(default_factory=dict)


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
            db = rds_backends[ACCOUNT][region].databases.get(out["db_identifier"])
            if db is not None:
                src = db.source_db_instance_identifier if db.is_replica else None
                seen.db[region] = {"id": db.db_instance_identifier, "status": db.status,
                                   "replica_of": _region_of(src, region) if src else None}
        return seen

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
        from drkit.lab._runtime import daemons

        running: dict[str, int] = {}
        for region, desired in seen.desired.items():
            specs = [s for s in self.cfg["services"] if s["region"] == region]
            n = 0
            for spec in sorted(specs, key=lambda s: s["instance"]):
                pid = daemons.current_pid(spec["pidfile"])
                want = spec["instance"] <= desired
                if want and pid is None:
                    spawned = daemons.spawn(spec)
                    self.note("instance-started", region=region, name=spec["name"],
                              pid=spawned.pid, desired=desired)
                    pid = spawned.pid
                elif not want and pid is not None:
                    daemons.stop(spec["name"], pid)
                    daemons.forget(spec["pidfile"])
                    self.note("instance-stopped", region=region, name=spec["name"], pid=pid,
                              desired=desired)
                    pid = None
                n += pid is not None
            running[region] = n
        return running

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
               "errors": self.errors, "events": self.events[-30:]}
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
                self.write_status(seen, active, running)
            except Exception as e:  # noqa: BLE001 - the follower outlives a bad tick
                self.errors += 1
                self.note("error", error=f"{type(e).__name__}: {e}")
                traceback.print_exc()
            self.stop.wait(interval)


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
