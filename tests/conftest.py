"""Shared fixtures: a real lab (moto, PostgreSQL primary + standby, payments APIs, HAProxy).

Use it from any test:

    def test_something(lab):            # function-scoped: the lab is up and healthy
        status, body = lab.https_post("/payments", {...}, headers={"Idempotency-Key": "k1"})
        with lab.pg("secondary") as conn: ...
        result = lab.run("playbooks/scenarios/region-failover/promote-data.yml")

`lab` hands out ONE lab per test session (`lab_session`), built in a fresh state directory
under /tmp on a free port range, with DRKIT_LAB_DIR / DRKIT_LAB_PORT_BASE / DRKIT_PLAN exported
for the whole session (so `drkit ...` subprocesses and CliRunner calls reach the same lab).

Tests may break it (kill processes, promote the standby, fail traffic over, take it down):
before each test that asks for `lab`, the fixture checks it (a fast status probe) and repairs
it with `lab up`, or, when a drill left it failed over, rebuilds it (`down` + `up`). A test that
needs a fresh database asks for `lab.reset()` itself. At the end of the session the lab is
taken down and the fixture asserts that no process from its pid files survives and no lab port
still listens. A test that asks for either fixture is marked `lab` at collection (the hook
below), so `-m "not lab"` leaves out every test that would start a lab.

Environment knobs: DRKIT_TEST_PLAN (plan file, default ./drkit.yml), DRKIT_TEST_LAB_INSTANCES
(payments instances per region, default 2, to keep a 2-core box responsive),
DRKIT_TEST_LAB_REPLICATION (sync/async, default the plan's).
"""

from __future__ import annotations

import atexit
import http.client
import json
import os
import random
import shutil
import signal
import socket
import ssl
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
PORT_SPAN = 50  # LabConfig.ports uses base .. base+30+instances
# issue 17: the plan's lab.topology is `auto` (namespaces wherever this machine can create them),
# but the suite's labs are pinned to `local`: measured on this 2-core box, a namespaced lab costs
# more per playbook (every region task goes over SSH) and the suite is built around many short
# drills (docs/topology.md, "Tests"). The namespaced lab is tested in tests/netns, which sets
# DRKIT_LAB_TOPOLOGY=namespaces itself; DRKIT_TEST_LAB_TOPOLOGY runs the whole suite on another.
LAB_TOPOLOGY = os.environ.get("DRKIT_TEST_LAB_TOPOLOGY", "local")
os.environ.setdefault("DRKIT_LAB_TOPOLOGY", LAB_TOPOLOGY)


def _port_free(port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


# Port ranges this process reserved: flocks held on /tmp/drkit-port-reservations/<block>, one
# per block of 10 ports, for the life of the process (the kernel drops them when it exits, so
# a killed session leaves no reservation behind).
PORT_RESERVATIONS = Path(os.environ.get("DRKIT_TEST_PORT_RESERVATIONS",
                                        "/tmp/drkit-port-reservations"))
_reserved: list[Any] = []


@atexit.register
def _release_port_reservations() -> None:
    # Before the interpreter tears down `os` (a generator closed then fails to close its fd).
    while _reserved:
        _reserved.pop().close()


def _reserve(base: int, span: int) -> bool:
    """Reserve base .. base+span-1 against every other pytest session on this machine, at once
    or not at all: two sessions starting together saw the same ports free and picked
    overlapping ranges before either lab had bound them."""
    from contextlib import ExitStack

    from drkit.files import locked

    PORT_RESERVATIONS.mkdir(mode=0o1777, exist_ok=True)
    held = ExitStack()
    try:
        for block in range(base - base % 10, base + span, 10):
            held.enter_context(locked(PORT_RESERVATIONS / str(block), wait=False))
    except OSError:  # BlockingIOError: another session holds a block
        held.close()
        return False
    _reserved.append(held)
    return True


def free_port_base(span: int = PORT_SPAN, tries: int = 200) -> int:
    """A base port such that base .. base+span-1 are all free on 127.0.0.1, and reserved for
    this session (`_reserve`).

    Below the kernel's ephemeral range: a client connection (the canary, psycopg, boto3) may
    otherwise hold a lab port as its local port just when a service restarts and binds it."""
    from drkit.lab._runtime import runtime

    listening = runtime.listening_ports()
    rng = random.Random()
    top = max(20000 + span + 10, min(60000, _ephemeral_low()) - span)
    for _ in range(tries):
        base = rng.randrange(20000, top, 10)
        ports = range(base, base + span)
        if any(p in listening for p in ports):
            continue
        if not _reserve(base, span):
            continue
        if all(_port_free(p) for p in ports):
            return base
        _reserved.pop().close()  # bound meanwhile by something else: give the range back
    raise RuntimeError("no free range of lab ports found")


@dataclass
class LabHandle:
    """A running lab for tests: where it is, how to reach it, how to repair it."""

    plan_path: Path
    state_dir: Path
    port_base: int
    env: dict[str, str]
    seen_pids: set[int] = field(default_factory=set)
    # What ensure_up last had to do: "" (nothing), "up" (restarted what died) or "rebuilt"
    # (down + up). The session summary lists the repairs: each costs CI time (issue 13).
    repaired: str = ""

    # ---- what it is
    @property
    def plan(self) -> Any:
        from drkit.config import load_plan

        return load_plan(self.plan_path)

    @property
    def config(self) -> Any:
        from drkit.config import lab_config

        return lab_config(self.plan)

    @property
    def ports(self) -> dict[str, int]:
        return dict(self.config.ports)

    @property
    def primary_region(self) -> str:
        return str(self.config.primary_region)

    @property
    def secondary_region(self) -> str:
        return str(self.config.secondary_region)

    @property
    def hostname(self) -> str:
        return str(self.config.hostname)

    @property
    def ca_file(self) -> Path:
        return self.state_dir / "ca" / "ca.crt"

    @property
    def entry_url(self) -> str:
        return f"https://127.0.0.1:{self.ports['https']}"

    @property
    def token(self) -> str:
        """The payments API's bearer token (the lab refuses requests without it)."""
        return (self.state_dir / "secrets" / "api.token").read_text().strip()

    def route53_failover(self) -> dict[str, str]:
        """Where the payments hostname's Route53 failover records point, read from moto:
        {"PRIMARY": "<region>.<hostname>", "SECONDARY": ...}."""
        import boto3

        outputs = json.loads((self.state_dir / "aws" / "outputs.json").read_text())
        r53 = boto3.client("route53", region_name="us-east-1",
                           endpoint_url=f"http://127.0.0.1:{self.ports['moto']}",
                           aws_access_key_id="x", aws_secret_access_key="y")
        records = r53.list_resource_record_sets(
            HostedZoneId=outputs["route53"]["zone_id"])["ResourceRecordSets"]
        return {r["Failover"]: r["ResourceRecords"][0]["Value"] for r in records
                if r["Name"].rstrip(".") == self.hostname and r.get("Failover")}

    # ---- library calls
    def status(self) -> Any:
        from drkit import lab

        st = lab.status(self.plan)
        self.seen_pids.update(st.pids)
        return st

    def up(self) -> Any:
        from drkit import lab

        st = lab.up(self.plan)
        self.seen_pids.update(st.pids)
        return st

    def down(self) -> Any:
        from drkit import lab

        self.seen_pids.update(self.status().pids)
        return lab.down(self.plan)

    def reset(self) -> Any:
        """A fresh lab: down, then up (new databases, new CA)."""
        self.down()
        return self.up()

    def ensure_up(self) -> Any:
        """Repair whatever a previous test broke; rebuild when a drill left it failed over."""
        from drkit.errors import EnvironmentProblem

        self.repaired = ""
        st = self.status()
        if st.up and st.active_region == self.primary_region:
            return st
        try:
            self.repaired = "up"
            st = self.up()
        except EnvironmentProblem as e:
            if "failed over" not in str(e):
                raise
            self.repaired = "rebuilt"
            return self.reset()
        if st.active_region != self.primary_region:
            # `lab up` keeps the region a drill chose; tests start from the primary.
            self.repaired = "rebuilt"
            return self.reset()
        return st

    def run(self, playbook: str | Path, **kw: Any) -> Any:
        """Run a playbook against this lab (drkit.lab.run): extra vars and env are the lab's."""
        from drkit import lab

        return lab.run(self.plan, playbook, **kw)

    # ---- clients
    def tls_context(self) -> ssl.SSLContext:
        """Verifies the entry point's certificate against the lab CA (and the host name)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def https(self, method: str, path: str, body: Any = None,
              headers: dict[str, str] | None = None, timeout: float = 10.0,
              server_hostname: str | None = None, auth: bool = True) -> tuple[int, Any]:
        """One request through the HAProxy TLS entry point; (status, decoded JSON or text).

        The certificate is verified against the lab CA, for 127.0.0.1 by default or for
        `server_hostname` (sent as SNI and checked against the certificate's names).
        """
        ctx = self.tls_context()
        conn = http.client.HTTPSConnection("127.0.0.1", self.ports["https"], timeout=timeout,
                                           context=ctx)
        if server_hostname:
            raw = socket.create_connection(("127.0.0.1", self.ports["https"]), timeout=timeout)
            conn.sock = ctx.wrap_socket(raw, server_hostname=server_hostname)
        data = None
        hdrs = dict(headers or {})
        if auth and path.split("?")[0] != "/healthz":
            hdrs.setdefault("Authorization", f"Bearer {self.token}")
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            raw_body = resp.read()
        finally:
            conn.close()
        try:
            return resp.status, json.loads(raw_body) if raw_body else None
        except ValueError:
            return resp.status, raw_body.decode("utf-8", "replace")

    def https_get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return self.https("GET", path, **kw)

    def https_post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return self.https("POST", path, body=body, **kw)

    @contextmanager
    def pg(self, role: str = "primary", dbname: str = "payments") -> Iterator[Any]:
        """A psycopg connection (autocommit) as the superuser to the primary or secondary."""
        import psycopg

        # The superuser connects only through the lab's socket folder (peer authentication).
        conn = psycopg.connect(host=str(self.state_dir / "pg" / "run"),
                               port=self.ports[f"pg_{role}"], user="postgres",
                               dbname=dbname, autocommit=True, connect_timeout=5)
        try:
            yield conn
        finally:
            conn.close()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that brings up the lab (asks for `lab` or `lab_session`, directly or through
    another fixture) carries the `lab` marker, so `-m "not lab"` (`scripts/test --fast`) never
    starts one. tryfirst: the marker must be on before pytest's own `-m` deselection runs."""
    for item in items:
        if "lab_session" in getattr(item, "fixturenames", ()) and \
                item.get_closest_marker("lab") is None:
            item.add_marker(pytest.mark.lab)
    # A test that leaves the session's lab down or failed over runs after the session's other
    # tests: the lab fixture would rebuild it before the next one (25-40 s of CI each, issue
    # 13). sorted() is stable: the order is otherwise the collection's.
    items[:] = sorted(items, key=lambda item: item.get_closest_marker("lab_last") is not None)


# (test, "built" | "up" | "rebuilt", seconds): where the session spent time on the lab itself.
LAB_SETUPS: list[tuple[str, str, float]] = []


def _still_ours(pid: int, root: Path, marker: str) -> bool:
    """A pid seen during the session that is alive and still one of this lab's processes: it
    carries the lab's marker, or names the lab's folder on its command line (PostgreSQL's -D,
    HAProxy's -f). A long session on a busy machine reuses pids (pid_max is 32768 here), and a
    pid that now belongs to someone else must be neither reported nor killed."""
    from drkit.lab._runtime import runtime

    if not runtime.pid_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read().split(b"\0")
    except OSError:
        environ = []
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return False
    return marker.encode() in environ or str(root).encode() in cmdline


@pytest.fixture(scope="session")
def lab_session() -> Iterator[LabHandle]:
    """One real lab for the whole session (see the module docstring)."""
    from drkit.lab._runtime import runtime

    root = Path(tempfile.mkdtemp(prefix="drkit-lab-test-", dir="/tmp"))
    os.chmod(root, 0o755)  # PostgreSQL runs as `postgres` and must traverse it
    state_dir = root / "state"
    base = free_port_base()
    plan_path = Path(os.environ.get("DRKIT_TEST_PLAN", REPO / "drkit.yml")).resolve()
    env = {
        "DRKIT_LAB_DIR": str(state_dir),
        "DRKIT_LAB_PORT_BASE": str(base),
        "DRKIT_LAB_INSTANCES": os.environ.get("DRKIT_TEST_LAB_INSTANCES", "2"),
        "DRKIT_PLAN": str(plan_path),
        "DRKIT_LAB_TOPOLOGY": LAB_TOPOLOGY,
    }
    if LAB_TOPOLOGY != "local":  # a /24 no other lab on this machine uses
        from drkit.lab import netns

        env["DRKIT_LAB_NETNS_CIDR"] = netns.free_cidr()
    if os.environ.get("DRKIT_TEST_LAB_REPLICATION"):
        env["DRKIT_LAB_REPLICATION"] = os.environ["DRKIT_TEST_LAB_REPLICATION"]
    handle = LabHandle(plan_path=plan_path, state_dir=state_dir, port_base=base, env=env)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        ports = list(handle.ports.values())
        from drkit import lab
        from drkit.config import load_plan

        marker = f"{lab.LAB_ID_VAR}={lab.lab_id(lab.config(load_plan(plan_path)))}"
        try:
            started = time.monotonic()
            handle.up()
            LAB_SETUPS.append(("(session start)", "built", time.monotonic() - started))
            yield handle
        finally:
            down_error: BaseException | None = None
            try:
                handle.seen_pids.update(handle.status().pids)
                handle.down()
            except BaseException as e:  # still clean up, then report
                down_error = e
            survivors = [p for p in sorted(handle.seen_pids) if _still_ours(p, root, marker)]
            listening = [p for p in ports if runtime.port_listening(p)]
            for pid in survivors:  # never leave a lab behind, even when the assertion fails
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            shutil.rmtree(root, ignore_errors=True)
    if down_error is not None:
        raise down_error
    assert not survivors, f"lab processes still alive after lab down: {survivors}"
    assert not listening, f"lab ports still listening after lab down: {listening}"


@pytest.fixture
def lab(lab_session: LabHandle, request: pytest.FixtureRequest) -> LabHandle:
    """The session's lab, up and healthy, traffic on the primary region."""
    started = time.monotonic()
    lab_session.ensure_up()
    if lab_session.repaired:
        LAB_SETUPS.append((request.node.nodeid, lab_session.repaired,
                           time.monotonic() - started))
    return lab_session


FOLDER_TIMES: dict[str, float] = {}
FOLDER_CPU: dict[str, float] = {}
CPU: dict[str, Any] = {"session": None, "at_start": {}, "since": 0.0}


def _folder(nodeid: str) -> str:
    path = nodeid.split("::")[0]
    return path if path.count("/") < 2 else path.rsplit("/", 1)[0]  # tests/x.py, tests/dir


def pytest_configure(config: pytest.Config) -> None:
    from tests.cpu import SessionCpu

    config.addinivalue_line("markers", "lab_last: leaves the session's lab down or failed over "
                            "(runs after the session's other tests)")

    CPU["session"] = SessionCpu.join()
    CPU["since"] = time.monotonic()


def pytest_unconfigure(config: pytest.Config) -> None:
    if CPU["session"] is not None:
        CPU["session"].leave()


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    if CPU["session"] is not None:
        CPU["at_start"][nodeid] = CPU["session"].used()


def pytest_runtest_logfinish(nodeid: str, location: Any) -> None:
    """CPU per folder, setup to teardown, of the test and every process it started."""
    if CPU["session"] is not None and nodeid in CPU["at_start"]:
        spent = CPU["session"].used() - CPU["at_start"].pop(nodeid)
        FOLDER_CPU[_folder(nodeid)] = FOLDER_CPU.get(_folder(nodeid), 0.0) + spent


def pytest_runtest_logreport(report: Any) -> None:
    """Time per folder (or top-level file), setup to teardown: to split scripts/test."""
    folder = _folder(report.nodeid)
    FOLDER_TIMES[folder] = FOLDER_TIMES.get(folder, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Where the session's time went per folder, and how often it built or repaired its lab
    and what that cost (issue 13: CI time)."""
    tr = terminalreporter
    if FOLDER_TIMES:
        tr.section("time per folder (setup + call + teardown)")
        for folder, seconds in sorted(FOLDER_TIMES.items(), key=lambda kv: -kv[1]):
            tr.write_line(f"{seconds:7.1f}s {folder}")
    session = CPU["session"]
    if session is not None and FOLDER_CPU:
        # What CI's wall time follows: the suite keeps both cores busy (tests/cpu.py).
        tr.section("CPU per folder (the tests and every process they started)")
        for folder, seconds in sorted(FOLDER_CPU.items(), key=lambda kv: -kv[1]):
            tr.write_line(f"{seconds:7.1f}s {folder}")
        wall = time.monotonic() - CPU["since"]
        tr.write_line(f"session CPU: {session.used():.0f} s in {wall:.0f} s of wall time")
    elif FOLDER_TIMES:
        tr.write_line("(no CPU per folder: it needs root and a cgroup cpuacct controller)")
    if not LAB_SETUPS:
        return
    tr.section("lab setups (build, and repairs before a test)")
    for nodeid, kind, seconds in LAB_SETUPS:
        tr.write_line(f"{seconds:7.1f}s {kind:8} {nodeid}")
    total = sum(seconds for _, _, seconds in LAB_SETUPS)
    tr.write_line(f"{total:7.1f}s in all, {len(LAB_SETUPS)} times")


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.1) -> Any:
    """Poll `predicate` until it returns something truthy; return that (or the last value)."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value
