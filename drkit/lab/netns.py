"""The lab's `namespaces` topology (issue 17): regions are places, not process names.

With `lab.topology: namespaces` (or DRKIT_LAB_TOPOLOGY=namespaces) `drkit lab up` builds, before
the services, one Linux network namespace per region, an edge namespace and a control namespace,
all joined by veth links to a bridge that lives in the edge namespace:

    <p>-ctl     eth0 .2    the controller's SSH client runs here (the lab's management network)
    <p>-edge    br0  .1    the bridge; the entry point's connections to the regions leave from
                           here (HAProxy runs on the controller's loopback, as the public face,
                           and opens its backend connections in this namespace: `namespace`)
    <p>-<primary region>    eth0 .11   sshd, PostgreSQL, payments instances of the primary
    <p>-<secondary region>  eth0 .12   the same for the secondary region

<p> is `dk` + the first 8 hex digits of the lab id (a hash of its state directory), so a test's
lab never meets a developer's. Addresses come from the lab's /24 (lab.netns_cidr or
DRKIT_LAB_NETNS_CIDR) and exist only inside these namespaces: nothing is added to the host's own
namespace (no address, no route, no link), so the lab sends no traffic anywhere else.

Each region namespace runs Debian's sshd on its address (own config, ed25519 host key, one
authorized key: the lab's key pair, all made by `lab up` under <state>/netns/ssh). Ansible
reaches the region hosts (inventories/lab: region-primary, region-secondary) over SSH through
the control namespace (an ssh wrapper that runs `ip netns exec <p>-ctl ssh`), so every process
of a region (PostgreSQL, payments) starts inside that region's namespace.

moto stays on the controller's loopback: it stands for the AWS control plane, which a regional
network outage does not cut off from the operator (AWS FIS's connectivity disruption leaves the
AWS APIs reachable too). Partitions cut a region's data plane: its link to the bridge.

The control path that works whatever the network does is `ip netns exec` (setns), the lab's
equivalent of the cloud provider's API: fencing uses it (drkit.lab.netns.fence).

Everything here is pure Python plus `ip`, `ssh-keygen` and `sshd`; nothing prints.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from drkit.files import atomic_write

if TYPE_CHECKING:
    from drkit.config import LabConfig

IP = "/usr/sbin/ip"
SSHD = "/usr/sbin/sshd"
SSH = "/usr/bin/ssh"
SSH_KEYGEN = "/usr/bin/ssh-keygen"
NETNS_DIR = Path("/var/run/netns")
TOPOLOGY_ENV = "DRKIT_LAB_TOPOLOGY"
CIDR_ENV = "DRKIT_LAB_NETNS_CIDR"
DEFAULT_CIDR = "10.213.0.0/24"
SSH_PORT = 22
CLONE_NEWNET = 0x40000000
ROLES = ("primary", "secondary")
T = TypeVar("T")


class Topology(StrEnum):
    LOCAL = "local"  # every region on the controller's loopback (the fallback)
    NAMESPACES = "namespaces"  # a network namespace per region, hosts reached over SSH


AUTO = "auto"  # the default setting: namespaces where this machine can create them, else local
RECORD = "topology.json"  # in the state dir: the topology `lab up` built, and why


@dataclass(frozen=True)
class Member:
    """One namespace of the lab and its end of the link to the bridge."""

    key: str  # ctl | edge | primary | secondary
    netns: str
    address: str  # its address on the lab's /24
    port: str  # the bridge port (in the edge namespace) that links it; "" for the edge itself
    region: str | None = None


@dataclass(frozen=True)
class Net:
    """The namespaced topology of one lab: names, addresses, files."""

    prefix: str
    cidr: str
    state_dir: Path
    members: tuple[Member, ...]

    def member(self, key: str) -> Member:
        return next(m for m in self.members if m.key == key)

    @property
    def edge(self) -> Member:
        return self.member("edge")

    @property
    def ctl(self) -> Member:
        return self.member("ctl")

    def region(self, role: str) -> Member:
        return self.member(role)

    @property
    def dir(self) -> Path:
        return self.state_dir / "netns"

    @property
    def ssh_dir(self) -> Path:
        return self.dir / "ssh"

    @property
    def client_key(self) -> Path:
        return self.ssh_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.ssh_dir / "known_hosts"

    def host_key(self, role: str) -> Path:
        return self.ssh_dir / f"host_{role}_ed25519"

    def sshd_config(self, role: str) -> Path:
        return self.ssh_dir / f"sshd_{role}.conf"

    def sshd_pidfile(self, role: str) -> Path:
        return self.ssh_dir / f"sshd_{role}.pid"

    def sshd_log(self, role: str) -> Path:
        return self.ssh_dir / f"sshd_{role}.log"

    @property
    def bin_dir(self) -> Path:
        return self.dir / "bin"

    @property
    def control_path_dir(self) -> Path:
        return self.dir / "cp"

    @property
    def namespaces(self) -> tuple[str, ...]:
        return tuple(m.netns for m in self.members)


def topology(cfg: LabConfig) -> Topology:
    return Topology(getattr(cfg, "topology", Topology.LOCAL))


def net(cfg: LabConfig) -> Net:
    """The names and addresses of a lab's namespaces (computed; nothing is created)."""
    from drkit.lab import lab_id

    prefix = "dk" + lab_id(cfg)[:8]
    cidr = str(getattr(cfg, "netns_cidr", DEFAULT_CIDR))
    hosts = ipaddress.ip_network(cidr)
    addr = {n: str(hosts.network_address + n) for n in (1, 2, 11, 12)}
    return Net(prefix=prefix, cidr=cidr, state_dir=cfg.state_dir, members=(
        Member("edge", f"{prefix}-edge", addr[1], ""),
        Member("ctl", f"{prefix}-ctl", addr[2], "p-ctl"),
        Member("primary", f"{prefix}-{cfg.primary_region}", addr[11], "p-primary",
               cfg.primary_region),
        Member("secondary", f"{prefix}-{cfg.secondary_region}", addr[12], "p-secondary",
               cfg.secondary_region),
    ))


def check_cidr(value: str) -> str:
    """A private IPv4 /24 (where the lab's addresses come from), or ValueError."""
    try:
        n = ipaddress.ip_network(value, strict=True)
    except ValueError as e:
        raise ValueError(f"{value!r} is not a network like 10.213.0.0/24 ({e})") from None
    if not isinstance(n, ipaddress.IPv4Network) or n.prefixlen != 24 or not n.is_private:
        raise ValueError(f"{value!r} must be a private IPv4 /24, e.g. 10.213.0.0/24")
    return str(n)


def used_cidrs() -> set[str]:
    """The IPv4 /24s with an address in some network namespace of this machine (any lab's)."""
    out: set[str] = set()
    try:
        names = [p.name for p in NETNS_DIR.iterdir()]
    except OSError:
        return out
    for name in names:
        try:
            cp = _run([IP, "-n", name, "-o", "-4", "addr", "show"], check=False, timeout=5)
        except NetnsError:
            continue
        for word in cp.stdout.split():
            if "/" in word and word[0].isdigit():
                try:
                    out.add(str(ipaddress.ip_interface(word.split("/")[0] + "/24").network))
                except ValueError:
                    continue
    return out


def free_cidr(rng: Any = None) -> str:
    """A private /24 under 10.200.0.0/13 that no namespace on this machine uses: for a second lab
    (a test session's next to a developer's). Two labs' addresses live in their own namespaces
    and could even be equal; distinct ones keep `ip` output and logs unambiguous."""
    import random

    rng = rng or random.Random()
    used = used_cidrs()
    for _ in range(200):
        cidr = f"10.{rng.randrange(200, 208)}.{rng.randrange(0, 256)}.0/24"
        if cidr not in used and cidr != DEFAULT_CIDR:
            return cidr
    raise NetnsError("no free /24 under 10.200.0.0/13 for the lab's namespaces")


# ---------------------------------------------------------------------------------------------
# what playbooks get


def here(cfg: LabConfig) -> Member | None:
    """The lab namespace this process runs in (a drill's driver on an execution node inside a
    region, issue 18), or None: the host's namespace, or one that is not this lab's. Compared
    as `ip netns identify` does: the namespace file's device and inode."""
    if topology(cfg) != Topology.NAMESPACES:
        return None
    try:
        mine = os.stat("/proc/thread-self/ns/net")
    except OSError:
        return None
    for m in net(cfg).members:
        try:
            st = os.stat(NETNS_DIR / m.netns)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
            return m
    return None


def service_host(cfg: LabConfig) -> str:
    """Where this process reaches the lab's host-side services (the HTTPS entry point, moto):
    the host's loopback, or, from inside one of the lab's namespaces, the edge's address, where
    HAProxy binds the entry point and forwards moto (playbooks/templates/haproxy.cfg.j2)."""
    return net(cfg).edge.address if here(cfg) is not None else "127.0.0.1"


def extravars(cfg: LabConfig) -> dict[str, Any]:
    """drkit_lab_topology and, with namespaces, drkit_lab_net (what inventories/lab uses to
    make region-primary/region-secondary real SSH hosts)."""
    topo = topology(cfg)
    out: dict[str, Any] = {"drkit_lab_topology": str(topo)}
    if topo != Topology.NAMESPACES:
        return out
    n = net(cfg)
    host = service_host(cfg)
    if host != "127.0.0.1":
        # issue 18: a run from inside the lab's network (the surviving region's execution
        # node) reaches moto and the entry point on the edge (extra vars win over group_vars).
        out["drkit_aws_endpoint_url"] = f"http://{host}:{cfg.ports['moto']}"
        out["drkit_entry_url"] = f"https://{host}:{cfg.ports['https']}"
    opts = [f"-o UserKnownHostsFile={n.known_hosts}", "-o StrictHostKeyChecking=yes",
            "-o IdentitiesOnly=yes", "-o BatchMode=yes", "-o ConnectTimeout=5",
            "-o ServerAliveInterval=2", "-o ServerAliveCountMax=3"]
    out["drkit_lab_net"] = {
        "cidr": n.cidr,
        "edge_netns": n.edge.netns,
        "edge_address": n.edge.address,
        "ctl_netns": n.ctl.netns,
        "ssh_executable": str(n.bin_dir / "ssh"),
        "sftp_executable": str(n.bin_dir / "sftp"),
        "scp_executable": str(n.bin_dir / "scp"),
        "private_key_file": str(n.client_key),
        "control_path_dir": str(n.control_path_dir),
        "ssh_common_args": " ".join(opts),
        "hosts": {role: {"address": n.region(role).address, "netns": n.region(role).netns,
                         "region": n.region(role).region, "port": n.region(role).port}
                  for role in ROLES},
    }
    return out


def inventory_vars(cfg: LabConfig, role: str) -> dict[str, Any]:
    """Connection variables of a host in the region `role` (what inventories/lab/hosts.yml
    templates for region-primary/region-secondary), for inventories drkit generates (the
    runbooks' payments instances)."""
    import sys

    x = extravars(cfg)["drkit_lab_net"]
    return {
        "ansible_connection": "ssh",
        "ansible_host": x["hosts"][role]["address"],
        "ansible_user": "root",
        "ansible_python_interpreter": sys.executable,
        "ansible_ssh_executable": x["ssh_executable"],
        "ansible_sftp_executable": x["sftp_executable"],
        "ansible_scp_executable": x["scp_executable"],
        "ansible_ssh_private_key_file": x["private_key_file"],
        "ansible_ssh_common_args": x["ssh_common_args"],
        "ansible_control_path_dir": x["control_path_dir"],
        "ansible_ssh_host_key_checking": True,
        "drkit_lab_role": role,
    }


# ---------------------------------------------------------------------------------------------
# small helpers


class NetnsError(Exception):
    """Something about the namespaces could not be done; the message says what."""


def _run(argv: list[str], check: bool = True,
         timeout: float = 20) -> subprocess.CompletedProcess[str]:
    try:
        cp = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NetnsError(f"{' '.join(argv)}: {e}") from e
    if check and cp.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} exited {cp.returncode}: "
                         f"{(cp.stderr or cp.stdout).strip()[:300]}")
    return cp


def available() -> str | None:
    """None when this machine can build the namespaced topology, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root (run drkit as root, or use lab.topology: local)"
    for tool in (IP, SSHD, SSH, SSH_KEYGEN):
        if not os.access(tool, os.X_OK):
            return (f"{tool} is missing (scripts/install installs iproute2 and "
                    "openssh-server), or use lab.topology: local")
    return None


_PROBED: dict[str, str | None] = {}


def probe() -> str | None:
    """None when this machine can create network namespaces (root, the tools, and a real
    `ip netns add` then `ip netns del`), else why not. Asked once per process: `lab up` records
    what it chose (`record`), so a built lab never asks again."""
    if "why" not in _PROBED:
        why = available()
        if why is None:
            name = f"dkprobe-{os.getpid()}"
            try:
                cp = _run([IP, "netns", "add", name], check=False)
                if cp.returncode != 0:
                    why = (f"`ip netns add` failed here ({(cp.stderr or cp.stdout).strip()[:200]}"
                           "): a container without CAP_SYS_ADMIN?")
                else:
                    _run([IP, "netns", "del", name], check=False)
            except NetnsError as e:
                why = f"`ip netns add` could not run: {e}"
        _PROBED["why"] = why
    return _PROBED["why"]


def built(state_dir: Path) -> tuple[str, str] | None:
    """The topology of the lab already in `state_dir` and why, None when none is there. A lab
    keeps the topology it was built with: `auto` must not move a running lab (a lab built before
    the record existed is told by its folders)."""
    try:
        data = json.loads((state_dir / RECORD).read_text())
        if data.get("topology") in (Topology.LOCAL, Topology.NAMESPACES):
            return str(data["topology"]), str(data.get("reason") or "")
    except (OSError, ValueError, AttributeError):
        pass
    if (state_dir / "netns").is_dir():
        return Topology.NAMESPACES, f"auto: the lab in {state_dir} runs in namespaces"
    if any((state_dir / d).is_dir() for d in ("pg", "haproxy", "services")):
        return Topology.LOCAL, f"auto: the lab in {state_dir} was built on loopback"
    return None


def resolve(setting: str, source: str, state_dir: Path) -> tuple[str, str]:
    """(topology, why) for a setting local | namespaces | auto, named by `source` (the plan's
    lab.topology or DRKIT_LAB_TOPOLOGY). auto: the lab already built keeps its topology;
    otherwise namespaces when this machine can create them, else local (the fallback)."""
    if setting != AUTO:
        return setting, f"{source}: {setting}"
    have = built(state_dir)
    if have is not None:
        return have
    why = probe()
    if why is None:
        return Topology.NAMESPACES, f"{source}: auto, and this machine can create namespaces"
    return Topology.LOCAL, f"{source}: auto, fell back to local: {why}"


def record(cfg: LabConfig) -> None:
    """What `lab up` built (and why), so every later command resolves `auto` the same way."""
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"topology": str(topology(cfg)),
                       "reason": str(getattr(cfg, "topology_reason", ""))}) + "\n"
    path = cfg.state_dir / RECORD
    if not path.is_file() or path.read_text() != text:
        atomic_write(path, text.encode("utf-8"), mode=0o644)


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def in_netns(name: str, fn: Callable[[], T], timeout: float = 10) -> T:
    """Run fn() on a fresh thread that has joined network namespace `name` (setns affects
    only the calling thread), so drkit can open sockets there without a subprocess."""
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            fd = os.open(NETNS_DIR / name, os.O_RDONLY)
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {name}: {os.strerror(err)}")
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e

    t = threading.Thread(target=body, name=f"netns-{name}", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise NetnsError(f"no answer inside namespace {name} after {timeout}s")
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def link_state(netns: str, dev: str) -> str | None:
    """'UP', 'DOWN' (administratively) or None when the link does not exist."""
    cp = _run([IP, "-n", netns, "-o", "link", "show", "dev", dev], check=False)
    if cp.returncode != 0:
        return None
    flags = cp.stdout.split("<", 1)[1].split(">", 1)[0].split(",") if "<" in cp.stdout else []
    return "UP" if "UP" in flags else "DOWN"


def pids_in(netns: str) -> list[int]:
    """Every process whose network namespace is `netns`."""
    if not exists(netns):
        return []
    cp = _run([IP, "netns", "pids", netns], check=False)
    return sorted(int(p) for p in cp.stdout.split() if p.isdigit())


def _listening(pid: int, port: int) -> bool:
    """Does the network namespace of `pid` have a TCP socket LISTENing on `port`?"""
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}", encoding="ascii") as f:
                next(f, None)
                for line in f:
                    parts = line.split()
                    if len(parts) > 3 and parts[3] == "0A" and \
                            int(parts[1].rsplit(":", 1)[1], 16) == port:
                        return True
        except OSError:
            return False
    return False


def _read_pid(path: Path) -> int | None:
    from drkit.lab._runtime import runtime

    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if runtime.pid_alive(pid) else None


# ---------------------------------------------------------------------------------------------
# up


def ensure(cfg: LabConfig, env: dict[str, str]) -> int:
    """Create what is missing: namespaces, bridge, links, addresses, keys, sshd per region.
    Idempotent; returns how many things it changed. `env` is the lab's environment (its marker
    and the database socket folder): every sshd carries it and hands it to its sessions."""
    why = available()
    if why:
        raise NetnsError(why)
    n = net(cfg)
    changed = 0
    for d, mode in ((n.dir, 0o755), (n.ssh_dir, 0o700), (n.bin_dir, 0o755),
                    (n.control_path_dir, 0o700)):
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, mode)
    for m in n.members:
        if not exists(m.netns):
            _run([IP, "netns", "add", m.netns])
            changed += 1
        _run([IP, "-n", m.netns, "link", "set", "lo", "up"])
    edge = n.edge.netns
    if link_state(edge, "br0") is None:
        _run([IP, "-n", edge, "link", "add", "br0", "type", "bridge"])
        _run([IP, "-n", edge, "addr", "add", f"{n.edge.address}/24", "dev", "br0"])
        changed += 1
    _run([IP, "-n", edge, "link", "set", "br0", "up"])
    for m in n.members:
        if m.key == "edge":
            continue
        if link_state(edge, m.port) is None:
            # Both ends are made straight inside their namespaces: no name ever appears in the
            # host's namespace, where two labs' names could clash.
            _run([IP, "link", "add", m.port, "netns", edge, "type", "veth", "peer", "eth0",
                  "netns", m.netns])
            _run([IP, "-n", edge, "link", "set", m.port, "master", "br0"])
            _run([IP, "-n", m.netns, "addr", "add", f"{m.address}/24", "dev", "eth0"])
            changed += 1
        _run([IP, "-n", m.netns, "link", "set", "eth0", "up"])
        # `lab up` makes the lab whole: a partition a killed drill left is healed (a promoted
        # standby makes `lab up` refuse before this: drkit.lab._check_topology).
        _run([IP, "-n", edge, "link", "set", m.port, "up"])
    changed += _ensure_keys(n)
    _write_wrappers(n)
    for role in ROLES:
        changed += _ensure_sshd(n, role, env)
    return changed


def _ensure_keys(n: Net) -> int:
    changed = 0
    keys = [n.client_key] + [n.host_key(r) for r in ROLES]
    for key in keys:
        if not key.is_file():
            _run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", f"drkit-lab {key.name}",
                  "-f", str(key)])
            changed += 1
    auth = n.ssh_dir / "authorized_keys"
    pub = (n.client_key.with_suffix(".pub")).read_text()
    if not auth.is_file() or auth.read_text() != pub:
        atomic_write(auth, pub.encode("utf-8"), mode=0o600)
    known = "".join(f"{n.region(r).address} {n.host_key(r).with_suffix('.pub').read_text()}"
                    for r in ROLES)
    if not n.known_hosts.is_file() or n.known_hosts.read_text() != known:
        atomic_write(n.known_hosts, known.encode("utf-8"), mode=0o644)
    return changed


def _write_wrappers(n: Net) -> None:
    """ssh, scp and sftp that run in the control namespace (Ansible's ssh connection uses them:
    ansible_ssh_executable and friends)."""
    for tool in ("ssh", "scp", "sftp"):
        text = (f"#!/bin/sh\n# drkit lab: {tool} from the lab's control namespace\n"
                f"exec {IP} netns exec {n.ctl.netns} /usr/bin/{tool} \"$@\"\n")
        path = n.bin_dir / tool
        if not path.is_file() or path.read_text() != text:
            atomic_write(path, text.encode("utf-8"), mode=0o755)


def _sshd_config(n: Net, role: str, env: dict[str, str]) -> str:
    setenv = " ".join(f"{k}={v}" for k, v in sorted(env.items()) if k in (
        "DRKIT_LAB_ID", "DRKIT_PG_HOST"))
    return "\n".join([
        f"# drkit lab: sshd of the {role} region ({n.region(role).region}), netns "
        f"{n.region(role).netns}",
        f"ListenAddress {n.region(role).address}:{SSH_PORT}",
        f"HostKey {n.host_key(role)}",
        f"PidFile {n.sshd_pidfile(role)}",
        f"AuthorizedKeysFile {n.ssh_dir / 'authorized_keys'}",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        # The state dir may sit under /tmp (world-writable): the key files are root's, 0600.
        "StrictModes no",
        "X11Forwarding no",
        "AllowTcpForwarding no",
        "PrintMotd no",
        "LogLevel ERROR",
        "MaxStartups 100:30:200",
        "MaxSessions 50",
        # Sessions carry the lab's marker (lab down finds every process by it) and the
        # database socket folder. SHLVL=1: bash, the login shell sshd runs each command with,
        # then reads no ~/.bashrc (it does for commands from sshd when it is the top-level
        # shell): the region hosts do not run the controller user's interactive set-up, e.g.
        # `pyenv init`, 0.3-0.7 s per command here, paid by every module run (issue 19).
        f"SetEnv {' '.join(filter(None, (setenv, 'SHLVL=1')))}",
        "Subsystem sftp internal-sftp",
        "",
    ])


def _ensure_sshd(n: Net, role: str, env: dict[str, str]) -> int:
    conf = _sshd_config(n, role, env)
    path = n.sshd_config(role)
    pid = _read_pid(n.sshd_pidfile(role))
    if pid is not None and path.is_file() and path.read_text() == conf and \
            _listening(pid, SSH_PORT):
        return 0
    if pid is not None:
        _kill([pid])
    atomic_write(path, conf.encode("utf-8"), mode=0o600)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    _run([SSHD, "-t", "-f", str(path)])
    full_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", **env}
    # sshd daemonizes itself (its parent exits at once) and writes its pid file.
    try:
        cp = subprocess.run([IP, "netns", "exec", n.region(role).netns, SSHD, "-f", str(path),
                             "-E", str(n.sshd_log(role))], env=full_env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NetnsError(f"cannot start sshd in {n.region(role).netns}: {e}") from e
    if cp.returncode != 0:
        raise NetnsError(f"sshd in {n.region(role).netns} exited {cp.returncode}: "
                         f"{cp.stderr.strip()[:300]} (log {n.sshd_log(role)})")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pid = _read_pid(n.sshd_pidfile(role))
        if pid is not None and _listening(pid, SSH_PORT):
            return 1
        time.sleep(0.05)
    raise NetnsError(f"sshd in {n.region(role).netns} does not listen on "
                     f"{n.region(role).address}:{SSH_PORT} (log {n.sshd_log(role)})")


# ---------------------------------------------------------------------------------------------
# down


def _kill(pids: list[int], timeout: float = 5.0) -> None:
    from drkit.lab._runtime import runtime

    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        left = [p for p in pids if runtime.pid_alive(p)]
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while any(runtime.pid_alive(p) for p in left) and time.monotonic() < deadline:
            time.sleep(0.05)


def destroy(cfg: LabConfig) -> list[int]:
    """Stop every process left in the lab's namespaces (sshd, anything a session started) and
    delete the namespaces (their links, bridge and addresses go with them). Returns the pids it
    stopped. Safe when nothing exists."""
    n = net(cfg)
    pids = sorted({p for ns in n.namespaces for p in pids_in(ns)} |
                  {p for r in ROLES if (p := _read_pid(n.sshd_pidfile(r))) is not None})
    _kill(pids)
    for ns in n.namespaces:
        if exists(ns):
            _run([IP, "netns", "del", ns], check=False)
    left = [ns for ns in n.namespaces if exists(ns)]
    if left:
        raise NetnsError(f"namespaces {', '.join(left)} are still there after `ip netns del`")
    if n.dir.is_dir():
        shutil.rmtree(n.dir, ignore_errors=True)
    (cfg.state_dir / RECORD).unlink(missing_ok=True)  # the next `lab up` chooses again
    return pids


def leftovers(cfg: LabConfig) -> list[str]:
    """What of this lab's topology still exists (namespaces, processes in them): [] when gone."""
    n = net(cfg)
    out = [f"namespace {ns}" for ns in n.namespaces if exists(ns)]
    out += [f"pid {p} in {ns}" for ns in n.namespaces for p in pids_in(ns)]
    return out


# ---------------------------------------------------------------------------------------------
# faults and fencing: the control path (ip netns exec / ip -n), which works whatever the
# network does


def partitioned(cfg: LabConfig, role: str) -> bool:
    """Is the region's link to the bridge administratively down (a partition in place)?"""
    n = net(cfg)
    return link_state(n.edge.netns, n.region(role).port) == "DOWN"


def partition(cfg: LabConfig, role: str) -> None:
    """Cut the region off: its bridge port goes down. Its processes keep running, and clients
    inside the region still reach them over its loopback."""
    n = net(cfg)
    _run([IP, "-n", n.edge.netns, "link", "set", n.region(role).port, "down"])


def heal(cfg: LabConfig, role: str) -> None:
    n = net(cfg)
    _run([IP, "-n", n.edge.netns, "link", "set", n.region(role).port, "up"])


# ---------------------------------------------------------------------------------------------
# status


@dataclass(frozen=True)
class Place:
    """One namespace as `lab status` shows it."""

    key: str
    netns: str
    address: str
    exists: bool
    link: str | None  # UP / DOWN (a partition) / None (no link)
    sshd_pid: int | None = None
    sshd_listening: bool = False


def places(cfg: LabConfig) -> list[Place]:
    n = net(cfg)
    out = []
    for m in n.members:
        ex = exists(m.netns)
        link = (link_state(n.edge.netns, m.port) if m.port else
                link_state(m.netns, "br0")) if ex and exists(n.edge.netns) else None
        pid = _read_pid(n.sshd_pidfile(m.key)) if m.key in ROLES else None
        out.append(Place(m.key, m.netns, m.address, ex, link, pid,
                         pid is not None and _listening(pid, SSH_PORT)))
    return out


def http_json(cfg: LabConfig, role: str, port: int, path: str = "/healthz",
              timeout: float = 2.0) -> tuple[int, Any]:
    """GET http://127.0.0.1:<port><path> from inside the region's namespace (status probes)."""
    from drkit.lab._runtime import runtime

    ns = net(cfg).region(role).netns
    if not exists(ns):
        return 0, None
    try:
        result: tuple[int, Any] = in_netns(
            ns, lambda: runtime.http_json(f"http://127.0.0.1:{port}{path}", timeout=timeout),
            timeout=timeout + 3)
    except (OSError, NetnsError):
        return 0, None
    return result
