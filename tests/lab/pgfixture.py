"""Throwaway PostgreSQL clusters and payments service processes for tests.

Clusters run as the `postgres` OS user (PostgreSQL refuses root) in a temp dir it owns, on free
ports picked at runtime. Every daemon is a direct child of the test process (no pg_ctl double
fork), so it is stopped by pid and waited on: PID 1 here does not reap orphans.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psycopg

PG_BIN = Path("/usr/lib/postgresql/15/bin")
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_ids() -> tuple[int, int]:
    pw = pwd.getpwnam("postgres")
    return pw.pw_uid, pw.pw_gid


def make_root() -> Path:
    """A temp dir the postgres user owns (pytest's tmp dirs are 0700 root, untraversable)."""
    root = Path(tempfile.mkdtemp(prefix="drkit-pg-"))
    uid, gid = _pg_ids()
    os.chown(root, uid, gid)
    root.chmod(0o755)
    return root


def _run_as_postgres(cmd: list[str], env: dict[str, str] | None = None) -> None:
    uid, gid = _pg_ids()
    proc = subprocess.run(
        cmd,
        user=uid,
        group=gid,
        extra_groups=[],
        cwd="/",
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()}")


class PgCluster:
    """One cluster: a data dir, a port, a superuser password, and the postmaster's Popen."""

    def __init__(self, root: Path, name: str, password: str) -> None:
        self.root = root
        self.name = name
        self.datadir = root / name
        self.sockdir = root / f"{name}.sock"
        self.logfile = root / f"{name}.log"
        self.port = free_port()
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    # -- creation -----------------------------------------------------------------------------

    @classmethod
    def primary(cls, root: Path, name: str = "primary") -> PgCluster:
        c = cls(root, name, "pw-" + secrets.token_hex(8))
        pwfile = root / f"{name}.pw"
        pwfile.write_text(c.password + "\n")
        uid, gid = _pg_ids()
        os.chown(pwfile, uid, gid)
        pwfile.chmod(0o600)
        _run_as_postgres(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(c.datadir),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ]
        )
        pwfile.unlink()
        c._write_conf()
        return c

    @classmethod
    def standby_of(cls, primary: PgCluster, name: str = "standby") -> PgCluster:
        c = cls(primary.root, name, primary.password)
        _run_as_postgres(
            [
                str(PG_BIN / "pg_basebackup"),
                "-D",
                str(c.datadir),
                "-h",
                "127.0.0.1",
                "-p",
                str(primary.port),
                "-U",
                "postgres",
                "-R",
                "-X",
                "stream",
                "--no-sync",
                "-c",
                "fast",
            ],
            env={"PGPASSWORD": primary.password},
        )
        c._write_conf()
        return c

    def _write_conf(self) -> None:
        self.sockdir.mkdir(exist_ok=True)
        uid, gid = _pg_ids()
        os.chown(self.sockdir, uid, gid)
        conf = self.datadir / "postgresql.conf"
        with conf.open("a") as f:
            # Later settings win: a base-backup copy of the primary's lines is overridden here.
            f.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.sockdir}'\n"
                # Throwaway clusters: durability is not what these tests measure.
                "fsync = off\nfull_page_writes = off\n"
                "wal_level = replica\nmax_wal_senders = 5\nhot_standby = on\n"
                "shared_buffers = 16MB\n"
            )

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout_s: float = 20.0) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        uid, gid = _pg_ids()
        log = open(self.logfile, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        try:
            self.proc = subprocess.Popen(
                [str(PG_BIN / "postgres"), "-D", str(self.datadir)],
                user=uid,
                group=gid,
                extra_groups=[],
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres {self.name} exited: {self.logfile.read_text()}")
            try:
                with self.connect(connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self, mode: str = "fast") -> None:
        """fast = SIGINT (abort sessions, checkpoint), immediate = SIGQUIT (like a crash)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGQUIT if mode == "immediate" else signal.SIGINT)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- access -------------------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        return (
            f"host=127.0.0.1 port={self.port} dbname=postgres user=postgres "
            f"password={self.password}"
        )

    def connect(self, connect_timeout: int = 5) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn, autocommit=True, connect_timeout=connect_timeout)

    def write_dsn_file(self, path: Path) -> Path:
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.dsn + "\n")
        os.rename(tmp, path)
        return path

    def promote(self) -> None:
        with self.connect() as conn:
            conn.execute("SELECT pg_promote(true, 30)")

    def wait_replayed(self, primary: PgCluster, timeout_s: float = 10.0) -> None:
        """Wait until this standby has replayed everything the primary has written so far."""
        with primary.connect() as p:
            row = p.execute("SELECT pg_current_wal_lsn()").fetchone()
        assert row is not None
        target = row[0]
        deadline = time.monotonic() + timeout_s
        with self.connect() as s:
            while True:
                done = s.execute(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)
                ).fetchone()
                if done and done[0]:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"standby {self.name} did not replay up to {target}")
                time.sleep(0.02)


def destroy(root: Path, clusters: list[PgCluster]) -> None:
    for c in clusters:
        c.stop("immediate")
    shutil.rmtree(root, ignore_errors=True)


# -- the payments service ---------------------------------------------------------------------


class Service:
    """One `python -m drkit.lab.payments serve` process."""

    def __init__(
        self, workdir: Path, dsn_file: Path, region: str = "eu-west-1", instance: str = "1"
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dsn_file = dsn_file
        self.logfile = workdir / f"svc-{region}-{instance}-{self.port}.log"
        self.pidfile = workdir / f"svc-{region}-{instance}-{self.port}.pid"
        self.region = region
        self.instance = instance
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "drkit.lab.payments",
            "serve",
            "--region",
            self.region,
            "--instance",
            self.instance,
            "--port",
            str(self.port),
            "--dsn-file",
            str(self.dsn_file),
            "--version",
            "1.0.0",
            "--pidfile",
            str(self.pidfile),
        ]

    def start(self, timeout_s: float = 15.0) -> Service:
        log = open(self.logfile, "ab")  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                self.argv(), cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited: {self.logfile.read_text()}")
            try:
                http_json("GET", self.url + "/healthz", timeout=1)
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")


def http_json(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, Any, dict[str, str]]:
    """(status, decoded JSON body or None, headers) — HTTP error statuses are returned, not
    raised; connection failures raise OSError."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status, hdrs = resp.status, dict(resp.headers)
    except urllib.error.HTTPError as e:
        raw, status, hdrs = e.read(), e.code, dict(e.headers)
    return status, (json.loads(raw) if raw else None), hdrs


def wait_for(predicate: Any, timeout_s: float, interval_s: float = 0.05) -> Any:
    """Poll `predicate` until it returns something truthy; return it, or fail with the last."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s}s (last: {last!r})")
