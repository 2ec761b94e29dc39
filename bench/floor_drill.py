"""The floor of a drill: the operations of `region-failover` on the lab, done directly from Python.

No orchestration: no Ansible, no evidence, no canary. Each part does what the drill's phase
does, in the same order, with the same independent steps side by side where the drill runs
them side by side (the stack update beside the promotion, the Route53 flip beside the smoke
flows), and times itself:

- preflight: replication read from the primary and the secondary region's instances' /healthz,
  while the secondary region's control plane validates the stack template;
- recovery: the primary region lost (its database crashed, its instances killed), the stack
  updated in the secondary region, the standby promoted, HAProxy switched over its runtime
  socket, Route53 flipped, the smoke flows until all pass. The clock runs the way the drill's
  does: from the moment the fault step issued the fault (just before the first kill) to the
  first all-green round;
- failback: the secondary region's stack back to its standby role and the old primary's
  instances started, both alongside the old primary rebuilt as a standby of the new one; the
  secondary stopped cleanly, the old primary promoted, HAProxy switched back, Route53 flipped
  back, the secondary following the old primary again as it is (a switchover: no copy, as
  drkit.dr.pg does).

    from floor_drill import Floor
    f = Floor(plan_path); f.preflight(); f.recovery(); f.failback()

bench/bench_drill.py runs it alternately with `drkit drill run` on one lab.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PG_BIN = "/usr/lib/postgresql/15/bin"
# The lab's own helpers (pid files, daemon start and readiness), as the drill's modules use them.
sys.path.insert(0, str(ROOT / "collections"))


class Floor:
    def __init__(self, plan_path: Path) -> None:
        import boto3

        from drkit import lab
        from drkit.config import lab_config, load_plan

        self.plan = load_plan(plan_path)
        self.cfg = cfg = lab_config(self.plan)
        self.sd, self.ports = cfg.state_dir, cfg.ports
        self.primary, self.secondary = cfg.primary_region, cfg.secondary_region
        env = lab.envvars(self.plan)
        os.environ["DRKIT_PG_HOST"] = env["DRKIT_PG_HOST"]
        aws = {"endpoint_url": f"http://127.0.0.1:{self.ports['moto']}",
               "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
               "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"]}
        self.cfn = boto3.client("cloudformation", region_name=self.secondary, **aws)
        self.r53 = boto3.client("route53", region_name=self.primary, **aws)
        self.outputs = json.loads((self.sd / "aws" / "outputs.json").read_text())["route53"]
        self.template = (ROOT / "playbooks" / "templates" / "regional-stack.yml").read_text()
        self.services = lab.services(cfg)
        self.socket_dir = env["DRKIT_PG_HOST"]
        self.sync = cfg.replication == "sync"

    # ---- helpers
    def pgdata(self, region: str) -> str:
        return str(self.sd / "pg" / region / "data")

    def pg_port(self, role: str) -> int:
        return int(self.ports[f"pg_{role}"])

    def as_postgres(self, *argv: str) -> None:
        subprocess.run(["runuser", "-u", self.cfg.os_user, "--", *argv], check=True,
                       capture_output=True)

    def pg_opts(self, port: int, *, sync: bool) -> str:
        """The settings the lab's clusters run with (inventories/lab drkit_lab_pg_options)."""
        pg = self.sd / "pg"
        opts = {"port": port, "listen_addresses": "127.0.0.1",
                "unix_socket_directories": self.socket_dir, "unix_socket_permissions": "0700",
                "hba_file": pg / "pg_hba.conf", "ident_file": pg / "pg_ident.conf",
                "wal_level": "replica", "max_wal_senders": 10, "wal_keep_size": "256MB",
                "hot_standby": "on", "wal_receiver_status_interval": "1s"}
        if sync and self.sync:
            opts["synchronous_standby_names"] = "*"
        return " ".join(f"-c {k}={v}" for k, v in opts.items())

    def query(self, port: int, sql: str) -> list[dict[str, Any]]:
        from ansible_collections.drkit.dr.plugins.module_utils import pgutil

        return pgutil.query(port, sql)

    def stack_update(self, role: str) -> None:
        stack = self.cfn.describe_stacks(StackName="drkit-payments")["Stacks"][0]
        params = [{"ParameterKey": p["ParameterKey"],
                   "ParameterValue": role if p["ParameterKey"] == "Role"
                   else p["ParameterValue"]} for p in stack["Parameters"]]
        try:
            self.cfn.update_stack(StackName="drkit-payments", TemplateBody=self.template,
                                  Parameters=params)
        except self.cfn.exceptions.ClientError as e:
            if "No updates" not in str(e):
                raise

    def haproxy(self, region: str) -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.sd / "haproxy" / "admin.sock"))
            s.sendall(f"set map {self.sd}/haproxy/active.map active {region}\n".encode())
            s.recv(4096)
        (self.sd / "haproxy" / "active.map").write_text(f"active {region}\n")

    def route53(self, active: str, standby: str) -> None:
        changes = []
        for ident, failover, region in (("primary", "PRIMARY", active),
                                        ("secondary", "SECONDARY", standby)):
            rr: dict[str, Any] = {
                "Name": self.cfg.hostname, "Type": "CNAME", "TTL": 30, "SetIdentifier": ident,
                "Failover": failover,
                "ResourceRecords": [{"Value": f"{region}.{self.cfg.hostname}"}]}
            if failover == "PRIMARY":
                rr["HealthCheckId"] = self.outputs["health_check_id"]
            changes.append({"Action": "UPSERT", "ResourceRecordSet": rr})
        self.r53.change_resource_record_sets(HostedZoneId=self.outputs["zone_id"],
                                             ChangeBatch={"Changes": changes})

    def standby(self, region: str, port: int, primary_port: int, *, sync: bool) -> None:
        """Rebuild `region`'s cluster as a streaming standby of `primary_port` (as drkit.dr.pg
        state=standby does after a failover: stop, move the old data aside (deleted in the
        background), pg_basebackup -R, start (syncing the copy with syncfs), streaming)."""
        data = self.pgdata(region)
        if (Path(data) / "postmaster.pid").exists():
            subprocess.run(["runuser", "-u", self.cfg.os_user, "--", f"{PG_BIN}/pg_ctl", "stop",
                            "-m", "immediate", "-w", "-D", data], capture_output=True)
        if os.path.isdir(data):
            aside = f"{data}.drkit-old-floor-{time.time_ns()}"
            os.rename(data, aside)
            subprocess.Popen(["rm", "-rf", aside], start_new_session=True)
        os.mkdir(data, 0o700)
        shutil.chown(data, self.cfg.os_user, self.cfg.os_user)
        conn = f"host={self.socket_dir} port={primary_port} user=replication " \
               f"application_name={region}"
        self.as_postgres(f"{PG_BIN}/pg_basebackup", "-D", data, "-d", conn, "-R", "-X",
                         "stream", "-c", "fast", "--no-sync")
        self.as_postgres(f"{PG_BIN}/pg_ctl", "start", "-w", "-D", data, "-l",
                         str(self.sd / "pg" / region / "postgresql.log"), "-o",
                         self.pg_opts(port, sync=sync) + " -c recovery_init_sync_method=syncfs")
        self.wait_streaming(region, port, primary_port)

    def wait_streaming(self, region: str, port: int, primary_port: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = self.query(port, "SELECT status, received_tli FROM pg_stat_wal_receiver")
            newest = max([int(n[:8], 16) for n in os.listdir(Path(self.pgdata(region)) / "pg_wal")
                          if n.endswith(".history")] or [0])
            if rows and rows[0]["status"] == "streaming" and rows[0]["received_tli"] >= newest:
                return
            time.sleep(0.05)
        raise SystemExit(f"floor: {region} does not stream from {primary_port}")

    def follow(self, region: str, port: int, primary_port: int) -> None:
        """A cleanly shut down former primary becomes a standby of `primary_port` as it is (as
        drkit.dr.pg state=standby does after a switchover): standby.signal, primary_conninfo,
        start, streaming on the primary's timeline."""
        data = Path(self.pgdata(region))
        auto = data / "postgresql.auto.conf"
        lines = [x for x in auto.read_text().splitlines()
                 if not x.strip().startswith("primary_conninfo")]
        lines.append(f"primary_conninfo = 'user=replication host={self.socket_dir} "
                     f"port={primary_port} application_name={region}'")
        auto.write_text("\n".join(lines) + "\n")
        (data / "standby.signal").touch()
        for f in (auto, data / "standby.signal"):
            shutil.chown(f, self.cfg.os_user, self.cfg.os_user)
        self.as_postgres(f"{PG_BIN}/pg_ctl", "start", "-w", "-D", str(data), "-l",
                         str(self.sd / "pg" / region / "postgresql.log"), "-o",
                         self.pg_opts(port, sync=False))
        self.wait_streaming(region, port, primary_port)

    def start_instances(self, role: str) -> None:
        from ansible_collections.drkit.dr.plugins.module_utils import daemonutil

        waits = []
        for spec in self.services:
            if spec["role"] != role:
                continue
            spec = {**spec, "env": {}, "user": None, "cwd": "/"}
            pid = daemonutil.current_pid(spec["pidfile"], spec["argv"])
            waits.append((spec, pid, None) if pid else
                         (spec, (sp := daemonutil.spawn(spec)).pid, sp))
        daemonutil.wait_all(waits, 30)

    # ---- the drill's parts
    def preflight(self) -> float:
        start = time.perf_counter()
        # The template is validated alongside the other checks, as the drill does.
        validate = threading.Thread(target=self.cfn.validate_template,
                                    kwargs={"TemplateBody": self.template})
        validate.start()
        rows = self.query(self.pg_port("primary"),
                          "SELECT state, sync_state FROM pg_stat_replication")
        if not any(r["state"] == "streaming" for r in rows):
            raise SystemExit(f"floor preflight: replication is not streaming: {rows}")
        for spec in self.services:
            if spec["role"] == "secondary":
                with urllib.request.urlopen(f"http://127.0.0.1:{spec['port']}/healthz",
                                            timeout=2) as r:
                    if r.status != 200:
                        raise SystemExit(f"floor preflight: {spec['name']} answers {r.status}")
        validate.join()
        return time.perf_counter() - start

    def recovery(self) -> dict[str, Any]:
        """Returns rto_s (fault issued -> all green) and the time each step took."""
        from drkit import flows

        steps: dict[str, float] = {}
        t = time.perf_counter()
        fault_at = datetime.now(UTC)  # the clock starts as the fault is issued, as the drill's
        self.as_postgres(f"{PG_BIN}/pg_ctl", "stop", "-m", "immediate", "-D",
                         self.pgdata(self.primary))
        for spec in self.services:
            if spec["role"] != "primary":
                continue
            try:
                os.kill(int(Path(spec["pidfile"]).read_text().split()[0]), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        steps["inject-fault"], t = time.perf_counter() - t, time.perf_counter()
        stack = threading.Thread(target=self.stack_update, args=("primary",))
        stack.start()
        steps["recreate-stack"], t = time.perf_counter() - t, time.perf_counter()
        self.as_postgres(f"{PG_BIN}/pg_ctl", "promote", "-w", "-D", self.pgdata(self.secondary))
        stack.join()
        steps["promote-data"], t = time.perf_counter() - t, time.perf_counter()
        self.haproxy(self.secondary)
        steps["failover-traffic"], t = time.perf_counter() - t, time.perf_counter()
        dns = threading.Thread(target=self.route53, args=(self.secondary, self.primary))
        dns.start()
        outcome = flows.smoke_until_green(
            f"https://127.0.0.1:{self.ports['https']}", str(self.sd / "ca" / "ca.crt"),
            list(flows.FLOWS), 60,
            token=(self.sd / "secrets" / "api.token").read_text().strip())
        steps["smoke"] = time.perf_counter() - t
        dns.join()
        if outcome.green_at is None:
            raise SystemExit(f"floor: smoke never went green: {outcome.results}")
        return {"rto_s": (outcome.green_at - fault_at).total_seconds(), "steps": steps}

    def failback(self) -> float:
        start = time.perf_counter()
        p_port, s_port = self.pg_port("primary"), self.pg_port("secondary")
        # As the drill: the standby stack deploys and the primary's instances start alongside
        # the database; the instances are awaited before traffic moves, the stack at the end.
        stack = threading.Thread(target=self.stack_update, args=("secondary",))
        stack.start()
        instances = threading.Thread(target=self.start_instances, args=("primary",))
        instances.start()
        self.standby(self.primary, p_port, s_port, sync=True)
        self.as_postgres(f"{PG_BIN}/pg_ctl", "stop", "-m", "fast", "-w", "-D",
                         self.pgdata(self.secondary))
        self.as_postgres(f"{PG_BIN}/pg_ctl", "promote", "-w", "-D", self.pgdata(self.primary))
        instances.join()
        self.haproxy(self.primary)
        self.route53(self.primary, self.secondary)
        self.follow(self.secondary, s_port, p_port)
        self.start_instances("secondary")
        stack.join()
        return time.perf_counter() - start
