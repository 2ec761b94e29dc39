"""Smoke flows, the canary, reconciliation and load against real services on real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from drkit.errors import BadInput
from drkit.flows import (
    FLOWS,
    Canary,
    FlowStatus,
    LoadGenerator,
    reconcile,
    references_digest,
    run_smoke,
    smoke_until_green,
)

try:  # tests/ is a rootdir (no __init__.py) unless someone makes it a package
    from lab.pgfixture import REPO, PgCluster, Service, destroy, free_port, make_root, wait_for
except ModuleNotFoundError:  # pragma: no cover - depends on how pytest imports tests/
    from tests.lab.pgfixture import (
        REPO,
        PgCluster,
        Service,
        destroy,
        free_port,
        make_root,
        wait_for,
    )


@dataclass
class Env:
    root: Path
    pg: PgCluster
    standby: PgCluster
    svc: Service  # on the primary
    ro_svc: Service  # on the standby (read-only)


def _init_db(dsn_file: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "drkit.lab.payments", "init-db", "--dsn-file", str(dsn_file)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    root = make_root()
    pg = PgCluster.primary(root)
    clusters = [pg]
    services: list[Service] = []
    try:
        pg.start()
        dsn = pg.write_dsn_file(root / "p.dsn")
        _init_db(dsn)
        standby = PgCluster.standby_of(pg)
        clusters.append(standby)
        standby.start()
        svc = Service(root, dsn).start()
        services.append(svc)
        ro = Service(root, standby.write_dsn_file(root / "s.dsn"), region="eu-central-1").start()
        services.append(ro)
        yield Env(root, pg, standby, svc, ro)
    finally:
        for s in services:
            s.stop()
        destroy(root, clusters)


def _closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


# -- smoke ------------------------------------------------------------------------------------


def test_every_smoke_flow_passes_against_a_healthy_service(env: Env) -> None:
    results = run_smoke(env.svc.url, None, FLOWS)
    assert [r.flow for r in results] == list(FLOWS)
    assert all(r.status is FlowStatus.PASS for r in results), results
    assert all(r.duration_s > 0 for r in results)
    by_flow = {r.flow: r.detail for r in results}
    assert "refunded" in by_flow["refund"] and "moved once" in by_flow["idempotent-replay"]


def test_smoke_flows_fail_with_the_reason_and_never_raise(env: Env) -> None:
    # A read-only standby: writes fail with the API's reason, reads still pass.
    results = {r.flow: r for r in run_smoke(env.ro_svc.url, None, FLOWS)}
    assert results["authorize"].status is FlowStatus.FAIL
    assert "503 database is read-only" in results["authorize"].detail
    assert results["ledger-verify"].status is FlowStatus.PASS
    # Nobody listening: every flow fails, all of them are still run and reported.
    down = run_smoke(_closed_url(), None, ["authorize", "ledger-verify"])
    assert [r.status for r in down] == [FlowStatus.FAIL, FlowStatus.FAIL]
    assert all("connection refused" in r.detail for r in down)


def test_bad_smoke_input_is_bad_input() -> None:
    with pytest.raises(BadInput, match="unknown smoke flow.*teleport"):
        run_smoke(_closed_url(), None, ["authorize", "teleport"])
    with pytest.raises(BadInput, match="not the string"):
        run_smoke(_closed_url(), None, "authorize")
    with pytest.raises(BadInput, match="entry URL"):
        run_smoke("ftp://127.0.0.1", None, ["authorize"])
    with pytest.raises(BadInput, match="CA file"):
        run_smoke("https://127.0.0.1:1", "/nonexistent/ca.pem", ["authorize"])


def test_smoke_until_green_stops_the_clock_when_the_database_is_back() -> None:
    root = make_root()
    pg = PgCluster.primary(root)
    svc: Service | None = None
    try:
        pg.start()
        dsn = pg.write_dsn_file(root / "p.dsn")
        _init_db(dsn)
        svc = Service(root, dsn).start()
        pg.stop("immediate")
        db_back: list[datetime] = []

        def restore() -> None:
            time.sleep(1.0)
            db_back.append(datetime.now(UTC))
            pg.start()

        t = threading.Thread(target=restore)
        t.start()
        outcome = smoke_until_green(svc.url, None, FLOWS, timeout_s=20)
        t.join()
        assert outcome.green and outcome.green_at is not None
        assert outcome.attempts > 1
        assert outcome.green_at > db_back[0] > outcome.started_at
        assert all(r.status is FlowStatus.PASS for r in outcome.results)
        assert outcome.to_json()["green_at"] == outcome.green_at.isoformat()
    finally:
        if svc:
            svc.stop()
        destroy(root, [pg])


def test_smoke_until_green_gives_up_at_the_timeout() -> None:
    started = time.monotonic()
    outcome = smoke_until_green(_closed_url(), None, FLOWS, timeout_s=0.5, interval_s=0.05)
    assert time.monotonic() - started < 3
    assert not outcome.green and outcome.green_at is None
    assert outcome.attempts >= 2
    assert outcome.results[0].status is FlowStatus.FAIL
    assert "connection refused" in outcome.results[0].detail
    assert all(r.status is FlowStatus.FAIL for r in outcome.results)
    assert "not run" in outcome.results[-1].detail


# -- TLS --------------------------------------------------------------------------------------


def _make_ca_and_server_cert(tmp: Path) -> tuple[Path, Path, Path]:
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "drkit test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_file, cert_file, key_file


class TlsForwarder:
    """A minimal TLS terminator in front of the plain-HTTP service (HAProxy's job in the lab)."""

    def __init__(self, backend_port: int, cert: Path, key: Path) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.backend_port = backend_port
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                raw, _ = self.sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            raw.settimeout(5)
            tls = self.ctx.wrap_socket(raw, server_side=True)
            backend = socket.create_connection(("127.0.0.1", self.backend_port), timeout=5)
            # HTTP/1.0 with Connection: close: read the request, forward, pump the answer back.
            threading.Thread(target=self._pump, args=(tls, backend), daemon=True).start()
            self._pump(backend, tls)
        except (OSError, ssl.SSLError):
            pass
        finally:
            raw.close()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()
        self.sock.close()


def test_flows_verify_the_entry_point_certificate_against_the_given_ca(
    env: Env, tmp_path: Path
) -> None:
    ca, cert, key = _make_ca_and_server_cert(tmp_path)
    fwd = TlsForwarder(env.svc.port, cert, key)
    try:
        url = f"https://127.0.0.1:{fwd.port}"
        results = run_smoke(url, str(ca), FLOWS)
        assert all(r.status is FlowStatus.PASS for r in results), results
        # Without our CA the system trust store does not know this certificate.
        untrusted = run_smoke(url, None, ["ledger-verify"])
        assert untrusted[0].status is FlowStatus.FAIL
        assert "certificate verify failed" in untrusted[0].detail
    finally:
        fwd.close()


# -- canary and reconciliation ----------------------------------------------------------------


def test_reconcile_with_nothing_lost(env: Env) -> None:
    run_id = uuid.uuid4().hex[:10]
    canary = Canary(env.svc.url, None, run_id, rate_per_s=40).start()
    wait_for(lambda: len(canary.acked) >= 15, timeout_s=10)
    canary.stop()
    acked = canary.acked
    assert [a.seq for a in acked] == list(range(1, len(acked) + 1))  # gapless numbering
    assert canary.failures == 0
    assert all(a.reference == f"canary:{run_id}:{a.seq:08d}" for a in acked)
    r = reconcile(env.svc.url, None, run_id, acked, fault_at=datetime.now(UTC))
    assert (r.acked_count, r.present_count, r.lost_count, r.rpo_s) == (len(acked), len(acked), 0, 0)
    assert r.missing == ()
    expected = hashlib.sha256("\n".join(sorted(a.reference for a in acked)).encode()).hexdigest()
    assert r.acked_digest == r.present_digest == expected
    assert r.ledger_balanced and r.ledger_debits_cents == r.ledger_credits_cents
    assert json.loads(json.dumps(r.to_json()))["lost_count"] == 0
    # The canary writes on while a drill reconciles: its newest payment can be present before
    # its acknowledgement is read. That one is in flight, not compared and not lost.
    r = reconcile(env.svc.url, None, run_id, acked[:-1], fault_at=datetime.now(UTC))
    assert (r.acked_count, r.present_count, r.lost_count) == (len(acked) - 1,) * 2 + (0,)
    assert r.acked_digest == r.present_digest and r.unacked_present == 1


def test_canary_across_a_lossy_failover_measures_the_lost_payments() -> None:
    """Replication is cut, the primary keeps acknowledging, then dies; the standby is promoted.
    Everything acknowledged after the cut is lost, and reconcile must say exactly that."""
    root = make_root()
    primary = PgCluster.primary(root)
    clusters = [primary]
    svc: Service | None = None
    canary: Canary | None = None
    try:
        primary.start()
        dsn = primary.write_dsn_file(root / "svc.dsn")
        _init_db(dsn)
        standby = PgCluster.standby_of(primary)
        clusters.append(standby)
        standby.start()
        svc = Service(root, dsn).start()
        run_id = f"drill_{uuid.uuid4().hex[:8]}"  # '_' must not act as a LIKE wildcard
        canary = Canary(svc.url, None, run_id, rate_per_s=50).start()
        wait_for(lambda: len(canary.acked) >= 15, timeout_s=10)

        # Cut replication: the standby stops receiving WAL (walreceiver gone). Payments acked
        # before the replay target was read are certainly on the standby; those acked while
        # the walreceiver shuts down may or may not be.
        safe_acked = len(canary.acked)
        standby.wait_replayed(primary)
        with standby.connect() as conn:
            conn.execute("ALTER SYSTEM SET primary_conninfo = ''")
            conn.execute("SELECT pg_reload_conf()")
            wait_for(
                lambda: (
                    conn.execute("SELECT count(*) FROM pg_stat_wal_receiver").fetchone() == (0,)
                ),
                timeout_s=10,
            )
        cut_acked = len(canary.acked)
        wait_for(lambda: len(canary.acked) >= cut_acked + 15, timeout_s=10)

        primary.stop("immediate")
        fault_at = datetime.now(UTC)
        failures_before = canary.failures
        standby.promote()
        standby.write_dsn_file(dsn)  # the service follows the new primary, no restart
        wait_for(lambda: any(a.acked_at > fault_at for a in canary.acked), timeout_s=10)
        wait_for(lambda: len([a for a in canary.acked if a.acked_at > fault_at]) >= 5, 10)
        canary.stop()
        acked = canary.acked

        r = reconcile(svc.url, None, run_id, acked, fault_at)

        # Independent truth: what the promoted database holds, read with SQL.
        with standby.connect() as conn:
            rows = conn.execute(
                "SELECT reference FROM payments WHERE starts_with(reference, %s)",
                (f"canary:{run_id}:",),
            ).fetchall()
        present = {row[0] for row in rows}
        lost = [a for a in acked if a.reference not in present]
        assert len(lost) >= 10  # at least most of the 15 acknowledged after the cut
        assert r.lost_count == len(lost)
        assert r.missing == tuple(sorted(a.reference for a in lost))
        assert r.lost_after_fault == 0
        assert r.acked_count == len(acked) and r.present_count == len(present)
        assert r.acked_digest == references_digest([a.reference for a in acked])
        assert r.present_digest == references_digest(list(present))
        assert r.acked_digest != r.present_digest
        # Everything acknowledged before the cut survived; everything after it was lost.
        assert all(a.reference in present for a in acked[:safe_acked])
        # (The canary writes one payment at a time: the one in flight when the cut was seen may
        # have committed before it, and is acknowledged just after; under load it often is.)
        after_cut = [a for a in acked[cut_acked + 1:] if a.acked_at < fault_at]
        assert all(a.reference not in present for a in after_cut)
        # RPO: newest lost ack minus newest present ack before it.
        newest_lost = max(lost, key=lambda a: a.acked_at)
        durable = max(
            (a for a in acked if a.reference in present and a.acked_at <= newest_lost.acked_at),
            key=lambda a: a.acked_at,
        )
        assert r.rpo_s == (newest_lost.acked_at - durable.acked_at).total_seconds()
        assert r.rpo_s > 0.1  # 15+ payments at 50/s
        assert canary.failures > failures_before  # the outage was seen, counted, survived
        assert r.ledger_balanced
    finally:
        if canary:
            canary.stop()
        if svc:
            svc.stop()
        destroy(root, clusters)


# -- load -------------------------------------------------------------------------------------


def test_load_generator_counts_ok_and_failed_requests(env: Env) -> None:
    with LoadGenerator(env.svc.url, None, rate_per_s=60, workers=2) as gen:
        wait_for(lambda: gen.ok >= 20, timeout_s=10)
    stats = gen.stats()
    assert stats.failed == 0 and stats.ok >= 20 and stats.errors == ()
    assert stats.p50_ms is not None and stats.max_ms is not None and stats.p50_ms <= stats.max_ms

    with LoadGenerator(_closed_url(), None, rate_per_s=60, mode="read") as down:
        wait_for(lambda: down.failed >= 5, timeout_s=10)
    stats = down.stats()
    assert stats.ok == 0 and stats.failed >= 5
    assert stats.errors[0][0] == "connection refused"

    with LoadGenerator(env.ro_svc.url, None, rate_per_s=60) as ro:
        wait_for(lambda: ro.failed >= 3, timeout_s=10)
    assert ro.stats().errors[0][0] == "HTTP 503 database is read-only"
    with pytest.raises(BadInput, match="load mode"):
        LoadGenerator(env.svc.url, None, mode="chaos")


# -- CLI --------------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drkit.flows", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_prints_one_json_object_and_exits_by_verdict(env: Env) -> None:
    ok = _cli("smoke", "--entry", env.svc.url, "--json")
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert ok.stdout.count("\n") == 1
    assert data["green"] is True and data["attempts"] == 1 and data["green_at"]
    assert [r["flow"] for r in data["results"]] == list(FLOWS)
    assert {r["status"] for r in data["results"]} == {"pass"}

    green = _cli("smoke", "--entry", env.svc.url, "--flows", "authorize,capture",
                 "--until-green", "--timeout", "10", "--json")  # fmt: skip
    assert green.returncode == 0 and json.loads(green.stdout)["green"] is True

    fail = _cli("smoke", "--entry", _closed_url(), "--until-green", "--timeout", "0.3", "--json")
    assert fail.returncode == 1
    data = json.loads(fail.stdout)
    assert data["green"] is False and data["green_at"] is None and data["attempts"] >= 1

    human = _cli("smoke", "--entry", env.ro_svc.url, "--flows", "ledger-verify")
    assert human.returncode == 0 and "green at" in human.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("smoke", "--json"),
        ("smoke", "--entry", "http://127.0.0.1:1", "--flows", "teleport", "--json"),
        ("smoke", "--entry", "http://127.0.0.1:1", "--timeout", "soon", "--json"),
        ("smoke", "--entry", "nope", "--json"),
        ("bogus", "--json"),
    ],
)
def test_cli_bad_arguments_exit_2_without_a_traceback(args: tuple[str, ...]) -> None:
    proc = _cli(*args)
    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stderr
    assert "error" in json.loads(proc.stdout)
