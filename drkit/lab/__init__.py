"""The lab: drkit's embedded default target, a two-region payments stack on loopback.

    up(plan)      build it, or repair what is dead (playbooks/lab/up.yml); idempotent
    down(plan)    stop every process it started, and remove its runtime state
    status(plan)  pure-Python probes of pid files, ports, /healthz and HAProxy's runtime API
    diagnose(plan)   is it failed over or half-recovered (what `drill recover` repairs)?

`up` and `down` hold the environment lock (drkit.envlock), as drills and runbooks do: one
change at a time. Every process the lab's playbooks start (lab up, a drill's phases, a runbook)
carries the marker DRKIT_LAB_ID=<lab_id> in its environment (it is in `envvars`, inherited by
Ansible, its modules and the daemons they start, PostgreSQL included), so `down` finds and stops
all of them from /proc (`marked_pids`), whatever the pid files say after commands interleaved.
    run(plan, playbook)      run any playbook against the lab (the drill's phases do)
    extravars(plan), envvars(plan)   what those playbooks are given

State directory layout (LabConfig.state_dir, default /var/tmp/drkit-lab):

    aws/outputs.json         {stacks: {<region>: CloudFormation outputs}, route53: {zone_id,
                             health_check_id, ...}}
    ca/ca.crt, ca/ca.key     the lab CA (community.crypto)
    tls/entry.pem            the entry point's certificate, and tls/entry.pem.key its key: what
                             HAProxy loads (ssl-load-extra-files) and the rotation runbook replaces
    secrets/payments.password   the app role's password (0600)
    pg/pg_hba.conf           shared, outside the data directories
    pg/<region>/data, pg/<region>/postgresql.log
    services/<region>.dsn    DSN file per region (0600); services/<region>-<i>.{pid,pid.meta,log}
    haproxy/haproxy.cfg, active.map, admin.sock (runtime API), master.sock, haproxy.{pid,log}
    moto/moto.{pid,log}
    runs/<utc-stamp>-<playbook>/   stdout and job_events.jsonl of every run (kept by `down`)
    locks/env-lab.lock, env-lab.drill   the environment lock and the last drill (kept by `down`)

This module is imported by the payments service too (drkit.lab.payments): keep its top light.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from drkit.config import LabConfig, Plan
    from drkit.engine import RunListener, RunResult

CONTENT_ROOT = Path(__file__).resolve().parents[2]
PG_BIN_DIR = Path("/usr/lib/postgresql/15/bin")
UP_PLAYBOOK = "playbooks/lab/up.yml"  # both parts, in sequence (for a plain ansible run)
# `up` runs these two side by side: they share nothing, and together they take about as long
# as the slower one.
UP_PARTS = ("playbooks/lab/services.yml", "playbooks/lab/aws.yml")
DOWN_PLAYBOOK = "playbooks/lab/down.yml"
# moto accepts any credentials; fixed ones keep a user's real AWS credentials out of the lab.
LAB_AWS_ACCESS_KEY_ID = "drkit-lab"
LAB_AWS_SECRET_ACCESS_KEY = "drkit-lab-not-a-secret"
PAYMENTS_VERSION = "1.0.0"  # what `lab up` runs; a rolling-patch runbook changes it
LAB_ID_VAR = "DRKIT_LAB_ID"  # the marker every lab process carries in its environment
LAYOUT = {"aws": 0o755, "ca": 0o755, "tls": 0o700, "secrets": 0o700, "pg": 0o755,
          "services": 0o755, "haproxy": 0o755, "moto": 0o755, "runs": 0o755}


@dataclass(frozen=True)
class Component:
    """One thing the lab runs (or holds): a process, a database, the entry point, a stack."""

    name: str
    kind: str  # aws | stack | postgres | payments | haproxy | entry
    region: str | None
    pid: int | None
    port: int | None
    healthy: bool
    detail: str = ""
    accepts: str = ""  # who may use it (drkit.lab.security.accepts)


@dataclass(frozen=True)
class LabStatus:
    state_dir: Path
    components: tuple[Component, ...]
    active_region: str | None
    up: bool
    changed: int | None = None  # set by up()/down(): tasks that changed something
    message: str = ""
    duration_s: float | None = None
    run_dir: Path | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    untracked: tuple[int, ...] = ()  # lab processes (by marker) that no pid file names
    drift: str | None = None  # failed over / half-recovered: what `drill recover` repairs
    busy: str | None = None  # who holds the environment lock now (drkit.envlock), if anyone
    topology: str = "local"  # issue 17: local (loopback) or namespaces (drkit.lab.netns)
    topology_reason: str = ""  # why that one (lab.topology: auto picks; drkit.lab.netns.resolve)

    def component(self, name: str) -> Component | None:
        return next((c for c in self.components if c.name == name), None)

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(sorted({c.pid for c in self.components if c.pid}))

    def to_json(self) -> dict[str, Any]:
        return {
            "up": self.up,
            "active_region": self.active_region,
            "state_dir": str(self.state_dir),
            "changed": self.changed,
            "message": self.message,
            "duration_s": None if self.duration_s is None else round(self.duration_s, 3),
            "run_dir": str(self.run_dir) if self.run_dir else None,
            "components": [asdict(c) for c in self.components],
            "untracked_pids": list(self.untracked),
            "drift": self.drift,
            "busy": self.busy,
            "topology": self.topology,
            "topology_reason": self.topology_reason,
            **dict(self.extra),
        }


# ---------------------------------------------------------------------------------------------
# what playbooks get


def config(plan: Plan) -> LabConfig:
    from drkit.config import lab_config

    return lab_config(plan)


def extravars(plan: Plan) -> dict[str, Any]:
    """Every variable the lab's and the drill's playbooks need about the lab."""
    cfg = config(plan)
    return {
        "drkit_lab_state_dir": str(cfg.state_dir),
        "drkit_lab_ports": cfg.ports,
        "drkit_lab_instances": cfg.instances,
        "drkit_lab_replication": cfg.replication,
        "drkit_lab_os_user": cfg.os_user,
        "drkit_lab_hostname": cfg.hostname,
        "drkit_lab_cert_validity_days": cfg.cert_validity_days,
        "drkit_lab_primary_region": cfg.primary_region,
        "drkit_lab_secondary_region": cfg.secondary_region,
        "drkit_content_root": str(CONTENT_ROOT),
        "drkit_python": sys.executable,
        "drkit_python_bin_dir": str(Path(sys.executable).parent),
        "drkit_lab_payments_version": PAYMENTS_VERSION,
        "drkit_lab_services": services(cfg),
        **_netns().extravars(cfg),  # issue 17: the topology (and its hosts, with namespaces)
    }


def services(cfg: LabConfig) -> list[dict[str, Any]]:
    """The payments API instances: what drkit_daemon(s) needs to run each, and where it sits.

    Each dict: name, region, role (primary|secondary), instance, port, backend and server (its
    HAProxy names), dsn_file, pidfile, log, wait_tcp and argv (which ends `--version V`).
    """
    sd = cfg.state_dir
    out = []
    for role in ("primary", "secondary"):
        region = cfg.primary_region if role == "primary" else cfg.secondary_region
        dsn = f"{sd}/services/{region}.dsn"
        for i in range(1, cfg.instances + 1):
            port = cfg.ports[f"api_{role}_{i}"]
            server = f"{region}-{i}"
            out.append({
                "name": f"payments-{server}", "region": region, "role": role, "instance": i,
                "port": port, "backend": f"be_{region}", "server": server, "dsn_file": dsn,
                "pidfile": f"{sd}/services/{server}.pid", "log": f"{sd}/services/{server}.log",
                "wait_tcp": port,
                # issue 17: the host that runs it (inventories/lab; localhost when local).
                "host": f"region-{role}",
                "argv": [sys.executable, "-m", "drkit.lab.payments", "serve", "--region", region,
                         "--instance", str(i), "--port", str(port), "--dsn-file", dsn,
                         # In a region's namespace the entry point comes in over its veth.
                         *(["--host", "0.0.0.0"] if cfg.topology == "namespaces" else []),
                         "--token-file", str(_security().api_token_file(sd)),
                         "--version", PAYMENTS_VERSION],
            })
    return out


def envvars(plan: Plan) -> dict[str, str]:
    """Environment of lab runs: moto's credentials, never the user's real AWS ones."""
    cfg = config(plan)
    return {
        "AWS_ACCESS_KEY_ID": LAB_AWS_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": LAB_AWS_SECRET_ACCESS_KEY,
        "AWS_DEFAULT_REGION": cfg.primary_region,
        "AWS_REGION": cfg.primary_region,
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        LAB_ID_VAR: lab_id(cfg),
        # The superuser reaches the clusters through their socket folder (peer auth, issue 16).
        "DRKIT_PG_HOST": str(_security().pg_socket_dir(cfg)),
    }


def _security() -> Any:
    from drkit.lab import security

    return security


def _netns() -> Any:
    from drkit.lab import netns

    return netns


def api_token(plan: Plan) -> str | None:
    """The payments API's bearer token (secrets/api.token), or None before `lab up`."""
    token: str | None = _security().api_token(config(plan).state_dir)
    return token


def secrets(plan: Plan) -> tuple[str, ...]:
    """Values the evidence redacts: the lab's API token (drill.target reads this)."""
    token = _security().api_token(config(plan).state_dir)
    return (token,) if token else ()


def lab_id(cfg: LabConfig) -> str:
    """The marker of one lab: a hash of its state directory (two labs never share it)."""
    return hashlib.sha256(str(cfg.state_dir).encode()).hexdigest()[:16]


def marked_pids(cfg: LabConfig) -> list[int]:
    """Every live process that carries this lab's marker in its environment: what the lab's
    playbooks started, whichever command started it and whatever the pid files now say.
    drkit's own process and its ancestors are left out (they may carry it from a shell)."""
    needle = f"{LAB_ID_VAR}={lab_id(cfg)}".encode()
    skip = {os.getpid(), *_ancestors(os.getpid())}
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in skip:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue  # gone, or a zombie (no environment, no ports)
        if needle in environ.split(b"\0"):
            found.append(int(name))
    return sorted(found)


def _resolve_playbook(plan: Plan, playbook: str | Path) -> Path:
    p = Path(playbook)
    if p.is_absolute():
        return p
    for root in (plan.root, CONTENT_ROOT):
        if (root / p).is_file():
            return root / p
    return CONTENT_ROOT / p


def _run_dir(state_dir: Path, name: str) -> Path:
    now = datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M%S") + f".{now.microsecond // 1000:03d}Z"
    return state_dir / "runs" / f"{stamp}-{name}"


def run(
    plan: Plan,
    playbook: str | Path,
    listener: RunListener | None = None,
    **kw: Any,
) -> RunResult:
    """Run a playbook against the lab with its extra vars and environment.

    `playbook` is absolute or relative to the plan's directory (or drkit's content root).
    Keyword arguments go to drkit.engine.run_playbook; `extravars` and `envvars` given here are
    merged over the lab's. Artifacts land in {state_dir}/runs/<utc-stamp>-<playbook name>/.
    """
    from drkit.engine import run_playbook

    cfg = config(plan)
    pb = _resolve_playbook(plan, playbook)
    extra = extravars(plan)
    extra.update(kw.pop("extravars", None) or {})
    env = envvars(plan)
    env.update(kw.pop("envvars", None) or {})
    artifacts = kw.pop("artifacts_dir", None) or _run_dir(cfg.state_dir, pb.stem)
    inventory = kw.pop("inventory", None) or plan.inventory(plan.lab_environment())
    return run_playbook(pb, inventory=Path(inventory), content_root=CONTENT_ROOT,
                        extravars=extra, artifacts_dir=Path(artifacts), listener=listener,
                        envvars=env, **kw)


# ---------------------------------------------------------------------------------------------
# up / down


def up(plan: Plan, listener: RunListener | None = None) -> LabStatus:
    """Bring the lab up, or repair it: whatever is dead is restarted. Idempotent."""
    from drkit.errors import RunFailed

    cfg = config(plan)
    started = time.monotonic()
    with _lock(plan, cfg, "lab up") as lease:
        _preflight(cfg, plan)
        _netns().record(cfg)  # issue 17: `auto` resolves to what was built from now on
        if cfg.topology == "namespaces":  # issue 17: namespaces, links, keys, sshd first
            _ensure_netns(plan, cfg)
        results = _run_parallel(plan, UP_PARTS, listener)
        for result in results:
            if not result.ok:
                what = (str(result.failure) if result.failure
                        else f"ansible-playbook exited {result.rc}")
                drift = diagnose(plan)
                raise RunFailed(
                    f"lab up failed: {what} (output: {result.stdout_path}); " + (
                        _recover_advice(plan, drift) if drift else
                        "fix that, then `drkit lab up` restarts only what is down; or start "
                        "over with `drkit lab down`, then `drkit lab up`"))
        st = _wait_healthy(plan, timeout=10)
        changed = sum(r.changed for r in results)
        if not st.up:
            bad = ", ".join(f"{c.name} ({c.detail})" for c in st.components if not c.healthy)
            raise RunFailed(f"lab up finished but these are not healthy: {bad}; " + (
                _recover_advice(plan, st.drift) if st.drift else
                f"see the logs under {cfg.state_dir}, or start over with `drkit lab down`, "
                "then `drkit lab up`"))
        message = ("lab already up: nothing changed" if changed == 0
                   else f"lab up: {changed} changed")
        if lease.took_over:
            message += f" (took over the lock of {lease.took_over.describe()}, whose process "
            message += "is gone)"
        return replace(st, changed=changed, message=message, run_dir=results[0].artifacts_dir,
                       duration_s=time.monotonic() - started,
                       extra={"runs": [{"playbook": r.playbook.name, "changed": r.changed,
                                        "duration_s": round(r.duration_s, 3),
                                        "artifacts": str(r.artifacts_dir)} for r in results],
                              "lock": lease.to_evidence()})


def pin_topology(plan: Plan, topology: str, why: str) -> None:
    """A lab that only works in one topology (the AWS-shaped lab: its follower starts processes
    on this machine's loopback) chooses it when the plan says `auto` and no lab is built yet."""
    from drkit.config import lab_config

    nn = _netns()
    s = plan.model.lab
    if os.environ.get("DRKIT_LAB_TOPOLOGY", s.topology) != nn.AUTO:
        return
    state_dir = lab_config(plan).state_dir
    if nn.built(state_dir) is None:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        import json

        (state_dir / nn.RECORD).write_text(json.dumps(
            {"topology": topology, "reason": f"lab.topology: auto, {why}"}) + "\n")


def _ensure_netns(plan: Plan, cfg: LabConfig) -> None:
    from drkit.errors import EnvironmentProblem

    nn = _netns()
    try:
        nn.ensure(cfg, envvars(plan))
    except nn.NetnsError as e:
        raise EnvironmentProblem(f"lab up (topology namespaces): {e}") from e


def _lock(plan: Plan, cfg: LabConfig, command: str) -> Any:
    """The lab's environment lock (the one drills and runbooks on the lab take)."""
    from drkit import envlock
    from drkit.errors import PlanError

    try:
        env = plan.lab_environment()
    except PlanError:
        env = envlock.LAB_KEY
    try:  # the lock lives in the state dir: a state dir that cannot exist says so first
        cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    except OSError as e:
        from drkit.errors import EnvironmentProblem

        raise EnvironmentProblem(
            f"state dir {cfg.state_dir} cannot be created ({e.strerror}): set DRKIT_LAB_DIR or "
            "lab.state_dir to a writable directory") from None
    # reenter: `drill recover` runs `lab up` under the lock it holds.
    return envlock.hold(cfg.state_dir, env, command, key=envlock.LAB_KEY, reenter=True)


def _lab_env_name(plan: Plan) -> str:
    from drkit.errors import PlanError

    try:
        return plan.lab_environment()
    except PlanError:
        return "lab"


def _recover_advice(plan: Plan, drift: str) -> str:
    env = _lab_env_name(plan)
    return (f"the lab is {drift}, which `drkit lab up` does not undo: run `drkit drill recover "
            f"--env {env}` to bring it back (or start over: `drkit lab down`, then "
            "`drkit lab up`)")


def _run_parallel(plan: Plan, playbooks: tuple[str, ...],
                  listener: RunListener | None) -> list[RunResult]:
    """Run independent playbooks at once (each in its own ansible-playbook), in order."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from drkit.engine import RunListener as _Base

    lock = threading.Lock()

    class _Serialized(_Base):
        """The listener sees one event at a time, whichever run it comes from."""

        def play_started(self, name: str, at: datetime) -> None:
            if listener:
                with lock:
                    listener.play_started(name, at)

        def task_started(self, play: str, task: str, at: datetime) -> None:
            if listener:
                with lock:
                    listener.task_started(play, task, at)

        def task_finished(self, result: Any) -> None:
            if listener:
                with lock:
                    listener.task_finished(result)

    shared = _Serialized()
    with ThreadPoolExecutor(max_workers=len(playbooks)) as pool:
        futures = [pool.submit(run, plan, pb, shared) for pb in playbooks]
        return [f.result() for f in futures]


def _stop_follower(cfg: LabConfig) -> None:
    """The AWS-shaped lab's follower first, and wait for it: it starts payments instances to
    match moto's capacity, so left running it restarts what the down playbook stops."""
    from drkit.lab._runtime import daemons

    pid = daemons.current_pid(str(cfg.state_dir / "aws" / "follower.pid"))
    if pid is not None:
        try:
            daemons.stop("follower", pid, timeout=15.0)
        except daemons.DaemonError as e:
            from drkit.errors import EnvironmentProblem

            raise EnvironmentProblem(f"lab down: {e}") from e


def down(plan: Plan, listener: RunListener | None = None) -> LabStatus:
    """Stop everything the lab started (by pid), wait for its ports, remove its state."""
    from drkit.errors import EnvironmentProblem, RunFailed

    cfg = config(plan)
    started = time.monotonic()
    if not cfg.state_dir.exists() and not marked_pids(cfg) and not _netns().leftovers(cfg):
        return replace(status(plan), changed=0, message="lab is not up: nothing to do",
                       duration_s=time.monotonic() - started)
    with _lock(plan, cfg, "lab down") as lease:
        pids = sorted(set(_lab_pids(cfg)) | set(marked_pids(cfg)))
        _stop_follower(cfg)
        result = run(plan, DOWN_PLAYBOOK, listener=listener)
        # issue 17: the regions' sshd (by their pid files), whatever else runs in the lab's
        # namespaces, then the namespaces with their links.
        in_netns = _destroy_netns(cfg)
        # Whatever the pid files missed (a command that interleaved, a pid file overwritten),
        # the marker finds: stop every process the lab started, even when the playbook failed.
        swept = [p for p in _stop_marked(cfg) if p not in in_netns]
        if not result.ok:
            what = (str(result.failure) if result.failure
                    else f"ansible-playbook exited {result.rc}")
            raise RunFailed(f"lab down failed: {what} (output: {result.stdout_path})")
        rt = _rt()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            alive = [p for p in pids if rt.pid_alive(p)]
            busy = [p for p in cfg.ports.values() if rt.port_listening(p)]
            if not alive and not busy:
                break
            time.sleep(0.1)
        alive = [p for p in pids if rt.pid_alive(p)]
        busy_pids = {p: rt.port_owners(p) for p in cfg.ports.values() if rt.port_listening(p)}
        if alive:
            raise EnvironmentProblem(
                f"lab down: pids {', '.join(map(str, alive))} are still running after SIGKILL "
                "(stuck in the kernel?); see `ps -o pid,stat,wchan -p "
                f"{','.join(map(str, alive))}`")
        if busy_pids:
            port, owners = next(iter(busy_pids.items()))
            names = ", ".join(f"{p} ({rt.process_name(p)})" for p in owners) or "?"
            raise EnvironmentProblem(
                f"lab down: port {port} still listens (pid {names}), a process this lab did "
                "not start (it does not carry the lab's marker); stop it, or move the lab with "
                "DRKIT_LAB_PORT_BASE")
        after = status(plan)
        n = result.changed + len(swept) + len(in_netns)
        message = "lab down: stopped and removed" if n else "lab is not up: nothing to do"
        if swept:
            message += (f" (also stopped {len(swept)} lab process(es) no pid file named: "
                        f"{', '.join(map(str, swept))})")
        if lease.took_over:
            message += (f" (took over the lock of {lease.took_over.describe()}, whose process "
                        "is gone)")
        return replace(after, changed=n, run_dir=result.artifacts_dir, message=message,
                       duration_s=time.monotonic() - started,
                       extra={"stopped_pids": sorted(set(pids) | set(swept) | set(in_netns)),
                              "lock": lease.to_evidence()})


def _destroy_netns(cfg: LabConfig) -> list[int]:
    """Whatever the topology says now: a lab built with namespaces leaves none behind."""
    from drkit.errors import EnvironmentProblem

    nn = _netns()
    try:
        pids: list[int] = nn.destroy(cfg)
    except nn.NetnsError as e:
        raise EnvironmentProblem(f"lab down: {e}") from e
    return pids


def _stop_marked(cfg: LabConfig, timeout: float = 10.0) -> list[int]:
    """SIGTERM every process with the lab's marker, SIGKILL what is left after `timeout`."""
    import signal

    rt = _rt()
    pids = marked_pids(cfg)
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        left = [p for p in pids if rt.pid_alive(p)]
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while any(rt.pid_alive(p) for p in left) and time.monotonic() < deadline:
            time.sleep(0.05)
    return pids


def _wait_healthy(plan: Plan, timeout: float) -> LabStatus:
    """HAProxy marks servers UP after their first check: give the entry point a moment."""
    deadline = time.monotonic() + timeout
    while True:
        st = status(plan)
        if st.up or time.monotonic() > deadline:
            return st
        time.sleep(0.2)


# ---------------------------------------------------------------------------------------------
# preflight: environment problems get one line, before any playbook runs


def _rt() -> Any:
    from drkit.lab._runtime import runtime

    return runtime


def _pg() -> Any:
    from drkit.lab._runtime import pgutil

    return pgutil


def _daemon_pidfiles(cfg: LabConfig) -> list[Path]:
    sd = cfg.state_dir
    files = [sd / "moto" / "moto.pid", sd / "haproxy" / "haproxy.pid"]
    files += sorted((sd / "services").glob("*.pid")) if (sd / "services").is_dir() else []
    return files


def _daemon_pid(pidfile: Path) -> int | None:
    """The pid recorded by drkit_daemon if that very process still runs (not a zombie)."""
    from drkit.lab._runtime import daemons

    pid: int | None = daemons.current_pid(str(pidfile))
    return pid


def _pg_dirs(cfg: LabConfig) -> dict[str, Path]:
    from drkit.files import under

    # Region names come from the plan: they never leave pg/ (issue 16: ../../victim).
    return {r: under(cfg.state_dir / "pg", r) / "data" for r in (cfg.primary_region,
                                                                 cfg.secondary_region)}


def _lab_pids(cfg: LabConfig) -> list[int]:
    pids = [p for f in _daemon_pidfiles(cfg) if (p := _daemon_pid(f))]
    pg = _pg()
    pids += [p for d in _pg_dirs(cfg).values() if (p := pg.postmaster_pid(str(d)))]
    return sorted(set(pids))


def _ancestors(pid: int) -> list[int]:
    chain = []
    for _ in range(64):
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
            pid = int(text[text.rfind(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            break
        if pid <= 1:
            break
        chain.append(pid)
    return chain


def _preflight(cfg: LabConfig, plan: Plan) -> None:
    import pwd

    from drkit.errors import EnvironmentProblem

    missing = [t for t in ("initdb", "pg_ctl", "pg_basebackup", "postgres")
               if not os.access(PG_BIN_DIR / t, os.X_OK)]
    if missing:
        raise EnvironmentProblem(
            f"PostgreSQL 15 binaries missing ({', '.join(missing)} in {PG_BIN_DIR}): "
            "run scripts/install")
    if shutil.which("haproxy") is None:
        raise EnvironmentProblem("haproxy is not installed (not on PATH): run scripts/install")
    moto = Path(sys.executable).parent / "moto_server"
    if not os.access(moto, os.X_OK):
        raise EnvironmentProblem(f"{moto} is missing: the lab needs drkit's lab extra (moto "
                                 "server): run scripts/install, or pip install 'drkit[lab]'")
    try:
        pw = pwd.getpwnam(cfg.os_user)
    except KeyError:
        raise EnvironmentProblem(
            f"OS user {cfg.os_user!r} (lab.os_user, runs PostgreSQL) does not exist: "
            "run scripts/install, or set lab.os_user in the plan") from None
    if os.geteuid() != 0:
        raise EnvironmentProblem(
            "the lab runs PostgreSQL as another user and HAProxy as root: run drkit lab as root")
    _check_state_dir(cfg, pw.pw_uid)
    _check_topology(cfg, plan)
    _check_ports(cfg)


def _check_state_dir(cfg: LabConfig, pg_uid: int) -> None:
    from drkit.errors import EnvironmentProblem

    sd = cfg.state_dir
    try:
        sd.mkdir(parents=True, exist_ok=True, mode=0o755)
    except OSError as e:
        raise EnvironmentProblem(
            f"state dir {sd} cannot be created ({e.strerror}): set DRKIT_LAB_DIR or "
            "lab.state_dir to a writable directory") from None
    if not sd.is_dir():
        raise EnvironmentProblem(f"state dir {sd} is not a directory: set DRKIT_LAB_DIR")
    for name, mode in LAYOUT.items():
        d = sd / name
        try:
            d.mkdir(mode=mode, exist_ok=True)
        except OSError as e:
            raise EnvironmentProblem(f"state dir {sd}: cannot create {d} ({e.strerror})") from None
    probe = sd / f".drkit-write-test-{os.getpid()}"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise EnvironmentProblem(
            f"state dir {sd} is not writable ({e.strerror}): set DRKIT_LAB_DIR or "
            "lab.state_dir to a writable directory") from None
    _security().write_marker(sd)  # `lab down` removes folders only where this is
    _security().ensure_api_token(sd)
    # PostgreSQL runs as lab.os_user and must reach its data directory under the state dir.
    for d in [sd, *sd.parents]:
        st = d.stat()
        if st.st_uid != pg_uid and not st.st_mode & 0o001:
            raise EnvironmentProblem(
                f"state dir {sd}: {d} is mode {st.st_mode & 0o777:04o}, so user "
                f"{cfg.os_user} cannot reach the lab's databases: chmod o+x {d}, or use a "
                "directory under /var/tmp (DRKIT_LAB_DIR)")


def _check_topology(cfg: LabConfig, plan: Plan) -> None:
    """Refuse to 'repair' a lab a drill left failed over: that would throw its data away, and
    `lab up` cannot put it back; `drill recover` can, so say that (never "run lab up again")."""
    from drkit.errors import EnvironmentProblem

    drift = _drift(cfg)
    if drift:
        raise EnvironmentProblem(_recover_advice(plan, drift))


def diagnose(plan: Plan) -> str | None:
    """What a drill left behind that `drkit lab up` cannot repair, in words (None: nothing):
    the standby promoted, the old primary a standby, traffic on the secondary region."""
    return _drift(config(plan))


def _drift(cfg: LabConfig, active: str | None = None) -> str | None:
    from drkit import envlock

    pg = _pg()
    dirs = _pg_dirs(cfg)
    prim, sec = dirs[cfg.primary_region], dirs[cfg.secondary_region]
    what = None
    if pg.is_initialized(str(sec)) and not pg.standby_signal(str(sec)):
        what = (f"failed over (the {cfg.secondary_region} database is a primary, not a "
                f"standby of {cfg.primary_region})")
    elif pg.is_initialized(str(prim)) and pg.standby_signal(str(prim)):
        what = (f"failed over, half failed back (the {cfg.primary_region} database is a "
                "standby)")
    else:
        if active is None:
            active = _active_region(cfg)
        if active is not None and active != cfg.primary_region:
            what = (f"failed over, half recovered (traffic goes to {active}, the databases "
                    f"are back in their places)")
    if what is None:
        return None
    mark = envlock.drill_mark(cfg.state_dir, envlock.LAB_KEY)
    if mark is not None and mark.unfinished:
        what += f", after `drkit {mark.command}` (run {mark.run_id}) died half way"
    return what


def _active_region(cfg: LabConfig) -> str | None:
    """The region HAProxy sends traffic to (its runtime map), None when HAProxy is not up."""
    rt = _rt()
    hp = cfg.state_dir / "haproxy"
    if _daemon_pid(hp / "haproxy.pid") is None:
        return None
    try:
        active: str | None = rt.haproxy_show_map(str(hp / "admin.sock"),
                                                 str(hp / "active.map")).get("active")
    except rt.HaproxyError:
        return None
    return active


def _check_ports(cfg: LabConfig) -> None:
    from drkit.errors import EnvironmentProblem

    rt = _rt()
    listening = rt.listening_ports()
    busy = {name: port for name, port in cfg.ports.items() if port in listening}
    if not busy:
        return
    ours = set(_lab_pids(cfg)) | set(marked_pids(cfg))
    inodes = set().union(*(listening[p] for p in busy.values()))
    owners = rt.socket_owners(inodes)
    for name, port in busy.items():
        pids = sorted({pid for i in listening[port] for pid in owners.get(i, [])})
        if not pids:
            raise EnvironmentProblem(
                f"port {port} ({name}) is already in use by another process: stop it, or move "
                "the lab with DRKIT_LAB_PORT_BASE (or lab.port_base)")
        foreign = [p for p in pids if p not in ours and not ours.intersection(_ancestors(p))]
        if foreign:
            pid = foreign[0]
            raise EnvironmentProblem(
                f"port {port} ({name}) is in use by pid {pid} ({rt.process_name(pid)}), which "
                "is not this lab's: stop it, or move the lab with DRKIT_LAB_PORT_BASE "
                "(or lab.port_base)")


# ---------------------------------------------------------------------------------------------
# status: fast, read-only, no Ansible


def status(plan: Plan) -> LabStatus:
    """What runs where, from pid files, ports, /healthz and HAProxy's runtime API."""
    from concurrent.futures import ThreadPoolExecutor

    cfg = config(plan)
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(_moto_component, cfg)]
        futures += [pool.submit(_stack_component, cfg, r) for r in
                    (cfg.primary_region, cfg.secondary_region)]
        futures += [pool.submit(_pg_component, cfg, role) for role in ("primary", "secondary")]
        futures += [pool.submit(_api_component, cfg, role, i)
                    for role in ("primary", "secondary") for i in range(1, cfg.instances + 1)]
        haproxy_f = pool.submit(_haproxy_component, cfg)
        entry_f = pool.submit(_entry_component, cfg)
        comps = [f.result() for f in futures]
        haproxy, active = haproxy_f.result()
        comps += [haproxy, entry_f.result()]
    comps += _topology_components(cfg)
    from drkit import envlock

    tracked = {c.pid for c in comps if c.pid}
    # issue 17: Ansible's persistent SSH connections live in the control namespace; not daemons.
    ctl = (set(_netns().pids_in(_netns().net(cfg).ctl.netns))
           if cfg.topology == "namespaces" else set())
    untracked = tuple(p for p in marked_pids(cfg) if p not in tracked and p not in ctl and
                      not tracked.intersection(_ancestors(p)))
    holder = envlock.peek(cfg.state_dir, envlock.LAB_KEY)
    busy = None
    if holder is not None:
        busy = holder.describe() + ("" if holder.alive else
                                    " (its process is gone: the next command takes over)")
    comps = _with_access(cfg, comps)
    return LabStatus(state_dir=cfg.state_dir, components=tuple(comps), active_region=active,
                     up=all(c.healthy for c in comps), untracked=untracked,
                     drift=_drift(cfg, active) if cfg.state_dir.is_dir() else None, busy=busy,
                     topology=cfg.topology, topology_reason=cfg.topology_reason)


def _topology_components(cfg: LabConfig) -> list[Component]:
    """issue 17: with namespaces, one component per namespace (and its region's sshd); a
    region whose link is down is partitioned (a drill's fault), which is not healthy."""
    if cfg.topology != "namespaces":
        return []
    out = []
    for p in _netns().places(cfg):
        region = (cfg.primary_region if p.key == "primary" else
                  cfg.secondary_region if p.key == "secondary" else None)
        if not p.exists:
            out.append(Component(f"netns-{p.key}", "netns", region, None, None, False,
                                 f"namespace {p.netns} missing"))
            continue
        ok = p.link == "UP"
        detail = f"{p.netns} {p.address}, link {p.link or 'missing'}"
        if p.link == "DOWN":
            detail += " (partitioned)"
        if p.key in ("primary", "secondary"):
            out.append(Component(f"sshd-{region}", "sshd", region, p.sshd_pid, 22,
                                 p.sshd_listening, f"{p.address}:22 in {p.netns}" if
                                 p.sshd_listening else "not listening"))
        out.append(Component(f"netns-{p.key}", "netns", region, None, None, ok, detail))
    return out


def _with_access(cfg: LabConfig, comps: list[Component]) -> list[Component]:
    accepts = _security().accepts(cfg)
    return [replace(c, accepts=accepts.get(c.kind, "")) for c in comps]


def advice(plan: Plan, st: LabStatus) -> str:
    """One line that matches the state: what to run, or that there is nothing to do."""
    from drkit import envlock

    env = _lab_env_name(plan)
    holder = envlock.peek(st.state_dir, envlock.LAB_KEY)
    if holder is not None and holder.alive:
        return (f"the lab is being changed by {holder.describe()}: wait for it to finish "
                "before changing it")
    if st.drift:
        return (f"the lab is {st.drift}: `drkit drill recover --env {env}` brings it back "
                "(`drkit lab up` does not undo a drill)")
    mark = envlock.drill_mark(st.state_dir, envlock.LAB_KEY)
    if mark is not None and mark.unfinished:
        return (f"`drkit {mark.command}` (run {mark.run_id}) died half way: `drkit drill "
                f"recover --env {env}` seals its evidence and brings the lab back")
    if st.up:
        extra = (f"; {len(st.untracked)} lab process(es) no pid file names "
                 f"({', '.join(map(str, st.untracked))}): `drkit lab down` stops them"
                 if st.untracked else "")
        return "lab is up" + extra
    if not any(c.pid for c in st.components) and not st.untracked:
        return "lab is down: `drkit lab up` builds it"
    return "lab is not (fully) up: `drkit lab up` restarts what is down"


def _region(cfg: LabConfig, role: str) -> str:
    return cfg.primary_region if role == "primary" else cfg.secondary_region


def _moto_component(cfg: LabConfig) -> Component:
    rt = _rt()
    port = cfg.ports["moto"]
    pid = _daemon_pid(cfg.state_dir / "moto" / "moto.pid")
    ok = bool(pid) and rt.port_open(port)
    return Component("moto", "aws", None, pid, port, ok,
                     "AWS control plane (moto)" if ok else
                     ("not listening" if pid else "not running"))


def _stack_component(cfg: LabConfig, region: str) -> Component:
    import json

    path = cfg.state_dir / "aws" / "outputs.json"
    try:
        outputs = json.loads(path.read_text())["stacks"][region]
    except (OSError, ValueError, KeyError, TypeError):
        return Component(f"stack-{region}", "stack", region, None, None, False,
                         "not deployed")
    live = _describe_stack(cfg.ports["moto"], region, "drkit-payments")
    ok = live in ("CREATE_COMPLETE", "UPDATE_COMPLETE")
    vpc = outputs.get("VpcId") or outputs.get("vpc_id") or "?"
    return Component(f"stack-{region}", "stack", region, None, None, ok,
                     f"{live or 'unknown to moto'}, vpc {vpc}")


def _describe_stack(port: int, region: str, name: str) -> str | None:
    """StackStatus from moto's CloudFormation API; no boto3 here (status must stay fast)."""
    import re
    import urllib.parse
    import urllib.request

    body = urllib.parse.urlencode({"Action": "DescribeStacks", "Version": "2010-05-15",
                                   "StackName": name}).encode()
    # moto reads the region from the credential scope; it does not check signatures.
    auth = (f"AWS4-HMAC-SHA256 Credential={LAB_AWS_ACCESS_KEY_ID}/20240101/{region}/"
            "cloudformation/aws4_request, SignedHeaders=host, Signature=0")
    req = urllib.request.Request(f"http://127.0.0.1:{port}/", data=body, method="POST",
                                 headers={"Authorization": auth, "Content-Type":
                                          "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            text = resp.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return None
    m = re.search(r"<StackStatus>([A-Z_]+)</StackStatus>", text)
    return m.group(1) if m else None


def _pg_component(cfg: LabConfig, role: str) -> Component:
    pg = _pg()
    region = _region(cfg, role)
    port = cfg.ports[f"pg_{role}"]
    pgdata = cfg.state_dir / "pg" / region / "data"
    pid = pg.postmaster_pid(str(pgdata))
    name = f"postgres-{region}"
    if pid is None:
        return Component(name, "postgres", region, None, port, False,
                         "not running" if pg.is_initialized(str(pgdata)) else "no cluster")
    info = pg.info(port, timeout=2, host=str(_security().pg_socket_dir(cfg)))
    if not info["reachable"]:
        return Component(name, "postgres", region, pid, port, False,
                         f"not reachable: {info['error']}")
    if info["in_recovery"]:
        sb = info["standby"] or {}
        streaming = sb.get("receiver_status") == "streaming"
        lag = sb.get("lag_s")
        detail = (f"standby, {'streaming' if streaming else 'NOT streaming'}"
                  + (f", lag {lag:.1f}s" if isinstance(lag, int | float) else ""))
        # A standby is healthy when it streams; in the secondary region that is the normal state.
        return Component(name, "postgres", region, pid, port, streaming, detail)
    rows = info["replication"]
    standbys = ", ".join(f"{r['application_name']} {r['sync_state']} {r['state']}"
                         for r in rows) or "no standby"
    return Component(name, "postgres", region, pid, port, True, f"primary ({standbys})")


def _api_component(cfg: LabConfig, role: str, i: int) -> Component:
    rt = _rt()
    region = _region(cfg, role)
    port = cfg.ports[f"api_{role}_{i}"]
    pid = _daemon_pid(cfg.state_dir / "services" / f"{region}-{i}.pid")
    name = f"payments-{region}-{i}"
    if pid is None:
        return Component(name, "payments", region, None, port, False, "not running")
    if cfg.topology == "namespaces":  # issue 17: it listens inside its region's namespace
        code, body = _netns().http_json(cfg, role, port)
    else:
        code, body = rt.http_json(f"http://127.0.0.1:{port}/healthz", timeout=2)
    if code != 200 or not isinstance(body, dict):
        detail = f"/healthz answered {code or 'nothing'}"
        if isinstance(body, dict):
            detail += f" ({body.get('status')}, db {body.get('db')})"
        return Component(name, "payments", region, pid, port, False, detail)
    mode = "writable" if body.get("db_writable") else "read-only (standby)"
    return Component(name, "payments", region, pid, port, True,
                     f"v{body.get('version')}, db {body.get('db')}, {mode}")


def _haproxy_component(cfg: LabConfig) -> tuple[Component, str | None]:
    rt = _rt()
    hp = cfg.state_dir / "haproxy"
    port = cfg.ports["https"]
    pid = _daemon_pid(hp / "haproxy.pid")
    if pid is None:
        return Component("haproxy", "haproxy", None, None, port, False, "not running"), None
    try:
        active = rt.haproxy_show_map(str(hp / "admin.sock"), str(hp / "active.map")).get(
            "active")
        servers = rt.haproxy_servers(str(hp / "admin.sock"))
    except rt.HaproxyError as e:
        return Component("haproxy", "haproxy", None, pid, port, False, str(e)), None
    parts = []
    for be, srvs in sorted(servers.items()):
        if not be.startswith("be_"):
            continue
        up_n = sum(1 for s in srvs.values() if s["op"] == "UP" and s["admin"] == "ready")
        parts.append(f"{be} {up_n}/{len(srvs)} up")
    active_be = servers.get(f"be_{active}", {})
    ok = any(s["op"] == "UP" for s in active_be.values())
    detail = f"active region {active}; " + ", ".join(parts)
    return Component("haproxy", "haproxy", None, pid, port, ok, detail), active


def _entry_component(cfg: LabConfig) -> Component:
    """The public entry point end to end: TLS verified against the lab CA, then /healthz."""
    import json
    import ssl
    import urllib.error
    import urllib.request

    port = cfg.ports["https"]
    ca = cfg.state_dir / "ca" / "ca.crt"
    if not ca.is_file():
        return Component("entry", "entry", None, None, port, False, "no lab CA yet")
    try:
        ctx = ssl.create_default_context(cafile=str(ca))
    except (OSError, ssl.SSLError) as e:
        return Component("entry", "entry", None, None, port, False, f"lab CA unreadable: {e}")
    url = f"https://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
            body = json.loads(resp.read() or b"{}")
            cert = _peer_days_left(cfg)
            return Component("entry", "entry", body.get("region"), None, port, True,
                             f"https OK via {body.get('region')}-{body.get('instance')}"
                             + (f", certificate valid {cert} more days" if cert is not None
                                else ""))
    except urllib.error.HTTPError as e:
        return Component("entry", "entry", None, None, port, False, f"/healthz answered {e.code}")
    except (OSError, ValueError) as e:
        return Component("entry", "entry", None, None, port, False,
                         str(getattr(e, "reason", e)))


def _peer_days_left(cfg: LabConfig) -> int | None:
    try:
        from cryptography import x509

        cert = x509.load_pem_x509_certificate((cfg.state_dir / "tls" / "entry.pem").read_bytes())
    except (OSError, ValueError, ImportError):
        return None
    return (cert.not_valid_after_utc - datetime.now(UTC)).days
