"""The reference payments API against real PostgreSQL clusters and real service processes."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .pgfixture import (
    REPO,
    PgCluster,
    Service,
    destroy,
    free_port,
    http_json,
    make_root,
    wait_for,
)


@dataclass
class Env:
    root: Path
    pg: PgCluster
    dsn_file: Path
    svc: Service


def _init_db(dsn_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drkit.lab.payments", "init-db", "--dsn-file", str(dsn_file)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    root = make_root()
    pg = PgCluster.primary(root)
    services: list[Service] = []
    try:
        pg.start()
        dsn_file = pg.write_dsn_file(root / "primary.dsn")
        init = _init_db(dsn_file)
        assert init.returncode == 0, init.stderr
        svc = Service(root, dsn_file)
        services.append(svc)
        svc.start()
        yield Env(root, pg, dsn_file, svc)
    finally:
        for s in services:
            s.stop()
        destroy(root, [pg])


def _pay(url: str, amount: int = 500, key: str | None = None, **fields: str) -> tuple:
    token = uuid.uuid4().hex[:10]
    body = {
        "amount_cents": amount,
        "currency": "EUR",
        "from_account": fields.get("from_account", f"payer-{token}"),
        "to_account": fields.get("to_account", f"payee-{token}"),
        "reference": fields.get("reference", f"test:{token}"),
    }
    headers = {"Idempotency-Key": key} if key else None
    status, resp, hdrs = http_json("POST", url + "/payments", body, headers)
    return status, resp, body, hdrs


def _balance(url: str, account: str) -> int:
    status, body, _ = http_json("GET", f"{url}/accounts/{account}/balance")
    assert status == 200, body
    assert body["account"] == account
    return int(body["balance_cents"])


def test_healthz_reports_identity_and_a_writable_database(env: Env) -> None:
    status, body, _ = http_json("GET", env.svc.url + "/healthz")
    assert status == 200
    assert body == {
        "status": "ok",
        "region": "eu-west-1",
        "instance": "1",
        "version": "1.0.0",
        "db_writable": True,
        "db": "up",
    }


def test_lifecycle_moves_money_through_a_balanced_double_entry_ledger(env: Env) -> None:
    url = env.svc.url
    _, before, _ = http_json("GET", url + "/ledger/verify")
    status, p, req, hdrs = _pay(url, amount=750)
    assert status == 201, p
    assert p["status"] == "authorized"
    assert {k: p[k] for k in req} == req
    assert hdrs["Location"] == f"/payments/{p['id']}"
    payer, payee = req["from_account"], req["to_account"]
    # authorize holds the money: debit the payer, credit its hold account
    assert _balance(url, payer) == -750
    assert _balance(url, f"holds:{payer}") == 750
    assert _balance(url, payee) == 0

    status, got, _ = http_json("GET", f"{url}/payments/{p['id']}")
    assert status == 200 and got["id"] == p["id"] and got["status"] == "authorized"

    status, cap, _ = http_json("POST", f"{url}/payments/{p['id']}/capture")
    assert status == 200 and cap["status"] == "captured"
    assert _balance(url, f"holds:{payer}") == 0
    assert _balance(url, payee) == 750
    status, err, _ = http_json("POST", f"{url}/payments/{p['id']}/capture")
    assert status == 409 and "captured" in err["error"]

    status, ref, _ = http_json("POST", f"{url}/payments/{p['id']}/refund")
    assert status == 200 and ref["status"] == "refunded"
    assert _balance(url, payer) == 0
    assert _balance(url, payee) == 0
    status, err, _ = http_json("POST", f"{url}/payments/{p['id']}/refund")
    assert status == 409

    status, after, _ = http_json("GET", url + "/ledger/verify")
    assert status == 200
    assert after["balanced"] is True
    assert after["debits_cents"] == after["credits_cents"]
    assert after["entries"] - before["entries"] == 6  # three movements, a pair each
    assert after["debits_cents"] - before["debits_cents"] == 3 * 750


def test_invalid_transitions_and_unknown_payments(env: Env) -> None:
    url = env.svc.url
    status, p, _, _ = _pay(url)
    status, err, _ = http_json("POST", f"{url}/payments/{p['id']}/refund")
    assert status == 409 and "must be captured" in err["error"]
    missing = uuid.uuid4()
    assert http_json("GET", f"{url}/payments/{missing}")[0] == 404
    assert http_json("POST", f"{url}/payments/{missing}/capture")[0] == 404
    assert http_json("GET", f"{url}/payments/not-a-uuid")[0] == 404
    # nothing moved for the refused refund
    with env.pg.connect() as conn:
        row = conn.execute(
            "SELECT count(*) FROM ledger_entries WHERE payment_id = %s", (p["id"],)
        ).fetchone()
    assert row == (2,)


@pytest.mark.parametrize(
    "body",
    [
        {"amount_cents": 0, "currency": "EUR", "from_account": "a", "to_account": "b"},
        {"amount_cents": -5, "currency": "EUR", "from_account": "a", "to_account": "b"},
        {"amount_cents": 1.5, "currency": "EUR", "from_account": "a", "to_account": "b"},
        {"amount_cents": True, "currency": "EUR", "from_account": "a", "to_account": "b"},
        {"amount_cents": 5, "currency": "euro", "from_account": "a", "to_account": "b"},
        {"amount_cents": 5, "currency": "EUR", "from_account": "", "to_account": "b"},
        {"amount_cents": 5, "currency": "EUR", "from_account": "a", "to_account": "a"},
        {"amount_cents": 5, "currency": "EUR", "from_account": "holds:a", "to_account": "b"},
        {
            "amount_cents": 5,
            "currency": "EUR",
            "from_account": "a",
            "to_account": "b",
            "reference": 7,
        },
        [1, 2],
    ],
)
def test_bad_payment_requests_are_refused_with_400(env: Env, body: object) -> None:
    status, err, _ = http_json("POST", env.svc.url + "/payments", body)
    assert status == 400
    assert isinstance(err["error"], str) and err["error"]


def test_protocol_errors(env: Env) -> None:
    import urllib.request

    req = urllib.request.Request(
        env.svc.url + "/payments", data=b"{not json", method="POST", headers={}
    )
    try:
        urllib.request.urlopen(req, timeout=5)
        raise AssertionError("expected HTTP 400")
    except urllib.error.HTTPError as e:
        assert e.code == 400
    assert http_json("GET", env.svc.url + "/nowhere")[0] == 404
    assert http_json("DELETE", env.svc.url + "/healthz")[0] == 405
    assert http_json("GET", env.svc.url + "/payments")[0] == 400  # prefix required


def test_idempotency_key_under_concurrency_moves_money_once(env: Env) -> None:
    url = env.svc.url
    key = f"idem-{uuid.uuid4()}"
    token = uuid.uuid4().hex[:10]
    body = {
        "amount_cents": 999,
        "currency": "EUR",
        "from_account": f"idem-payer-{token}",
        "to_account": f"idem-payee-{token}",
        "reference": f"idem:{token}",
    }
    n = 16
    barrier = threading.Barrier(n)
    answers: list[tuple[int, dict, dict]] = []
    lock = threading.Lock()

    def hit() -> None:
        barrier.wait()
        got = http_json("POST", url + "/payments", body, {"Idempotency-Key": key}, timeout=10)
        with lock:
            answers.append(got)

    threads = [threading.Thread(target=hit) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(a[0] for a in answers)
    assert statuses == [200] * (n - 1) + [201], statuses
    assert len({a[1]["id"] for a in answers}) == 1
    # a replay answers the original body, and says it is a replay
    created = next(a[1] for a in answers if a[0] == 201)
    for status, resp, hdrs in answers:
        assert resp == created
        assert (hdrs.get("Idempotent-Replayed") == "true") == (status == 200)
    assert _balance(url, body["from_account"]) == -999
    with env.pg.connect() as conn:
        rows = conn.execute(
            "SELECT count(*) FROM payments WHERE idempotency_key = %s", (key,)
        ).fetchone()
        entries = conn.execute(
            "SELECT count(*) FROM ledger_entries WHERE payment_id = %s", (created["id"],)
        ).fetchone()
    assert rows == (1,) and entries == (2,)


def test_replay_after_capture_still_returns_the_original_body(env: Env) -> None:
    key = f"idem-{uuid.uuid4()}"
    status, first, body, _ = _pay(env.svc.url, key=key)
    assert status == 201
    assert http_json("POST", f"{env.svc.url}/payments/{first['id']}/capture")[0] == 200
    status, again, _ = http_json("POST", env.svc.url + "/payments", body, {"Idempotency-Key": key})
    assert status == 200 and again == first
    # the same key with a different request is refused, not silently replayed
    status, err, _ = http_json(
        "POST",
        env.svc.url + "/payments",
        {**body, "amount_cents": body["amount_cents"] + 1},
        {"Idempotency-Key": key},
    )
    assert status == 422 and "Idempotency-Key" in err["error"]


def test_listing_by_reference_prefix_handles_thousands_and_escapes_wildcards(env: Env) -> None:
    run = uuid.uuid4().hex[:8]
    n = 5000
    with env.pg.connect() as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO payments (id, reference, amount_cents, currency, from_account, "
            "to_account, status) SELECT gen_random_uuid(), %s || lpad(i::text, 8, '0'), 1, "
            "'EUR', 'a', 'b', 'authorized' FROM generate_series(1, %s) AS i",
            (f"canary:{run}:", n),
        )
        # neighbours that must not match: a longer run id, and '_' / '%' used as wildcards
        cur.executemany(
            "INSERT INTO payments (id, reference, amount_cents, currency, from_account, "
            "to_account, status) VALUES (gen_random_uuid(), %s, 1, 'EUR', 'a', 'b', "
            "'authorized')",
            [
                (f"canary:{run}x:00000001",),
                (f"w_{run}:1",),
                (f"wX{run}:1",),
                (f"p%{run}:1",),
                (f"pZZ{run}:1",),
            ],
        )
        cur.execute("ANALYZE payments")
    status, items, _ = http_json(
        "GET", f"{env.svc.url}/payments?reference_prefix=canary:{run}:", timeout=10
    )
    assert status == 200
    assert len(items) == n
    refs = [i["reference"] for i in items]
    assert refs == sorted(refs)
    assert refs[0] == f"canary:{run}:00000001" and refs[-1] == f"canary:{run}:{n:08d}"
    assert set(items[0]) == {"id", "reference", "created_at"}
    assert items[0]["created_at"].endswith("Z")

    for prefix, expected in [(f"w_{run}:", f"w_{run}:1"), (f"p%25{run}:", f"p%{run}:1")]:
        status, items, _ = http_json("GET", f"{env.svc.url}/payments?reference_prefix={prefix}")
        assert [i["reference"] for i in items] == [expected]

    # the prefix query can use the text_pattern_ops index (thousands of rows, quickly)
    with env.pg.connect() as conn:
        conn.execute("SET enable_seqscan = off")
        plan = conn.execute(
            "EXPLAIN SELECT id FROM payments WHERE reference LIKE %s ESCAPE '\\'",
            (f"w\\_{run}:%",),
        ).fetchall()
    assert "payments_reference_idx" in "\n".join(r[0] for r in plan)


def test_secrets_stay_out_of_ps_and_logs_and_init_db_is_idempotent(env: Env) -> None:
    again = _init_db(env.dsn_file)
    assert again.returncode == 0, again.stderr
    assert env.pg.password not in again.stderr
    assert env.svc.proc is not None
    cmdline = Path(f"/proc/{env.svc.proc.pid}/cmdline").read_bytes().decode()
    assert str(env.dsn_file) in cmdline
    assert env.pg.password not in cmdline
    _pay(env.svc.url)
    log = env.svc.log()
    assert '"POST /payments" 201' in log
    assert env.pg.password not in log


def test_the_dsn_files_own_settings_win_and_a_rewritten_file_is_followed(env: Env) -> None:
    named = env.root / "named.dsn"
    named.write_text(env.pg.dsn + " application_name=payments-eu-west-1-test\n")
    named.chmod(0o600)
    svc = Service(env.root, named, instance="3").start()
    try:
        assert _pay(svc.url)[0] == 201
        with env.pg.connect() as conn:
            names = {
                r[0]
                for r in conn.execute("SELECT application_name FROM pg_stat_activity").fetchall()
            }
        assert "payments-eu-west-1-test" in names
        # A DSN file rewritten to nonsense at runtime: 503, the path logged, no secret.
        named.write_text("host=127.0.0.1 port=1 password=hunter2-not-logged\n")
        named.chmod(0o644)
        status, err, _ = http_json("GET", svc.url + "/healthz")
        # The pooled connection is still good, so health holds until the pool needs a new one.
        assert status == 200
        with env.pg.connect() as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'payments-eu-west-1-test'"
            )
        status, err, _ = http_json("GET", svc.url + "/healthz")
        assert status == 503 and err["db"] == "down"
        assert "group or others" in svc.log() and "hunter2" not in svc.log()
    finally:
        svc.stop()


def test_a_dsn_file_open_to_others_is_refused(env: Env) -> None:
    loose = env.root / "loose.dsn"
    env.pg.write_dsn_file(loose)
    loose.chmod(0o644)
    port = free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "drkit.lab.payments", "serve", "--region", "r", "--instance",
         "1", "--port", str(port), "--dsn-file", str(loose)],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2
    assert str(loose) in proc.stderr and "chmod 600" in proc.stderr
    assert env.pg.password not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    bad_args = subprocess.run(
        [sys.executable, "-m", "drkit.lab.payments", "serve", "--port", "x"],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert bad_args.returncode == 2 and "Traceback" not in bad_args.stderr


def test_sigterm_stops_the_service_cleanly(env: Env) -> None:
    svc = Service(env.root, env.dsn_file, instance="2").start()
    try:
        assert svc.proc is not None
        assert svc.pidfile.read_text().strip() == str(svc.proc.pid)
        assert stat.S_IMODE(env.dsn_file.stat().st_mode) == 0o600
        os.kill(svc.proc.pid, signal.SIGTERM)
        assert svc.proc.wait(timeout=10) == 0
        assert not svc.pidfile.exists()
        assert "payments: stopped" in svc.log()
    finally:
        svc.stop()


def test_service_rides_out_restart_read_only_standby_and_promotion() -> None:
    root = make_root()
    primary = PgCluster.primary(root)
    clusters = [primary]
    services: list[Service] = []
    try:
        primary.start()
        p_dsn = primary.write_dsn_file(root / "p.dsn")
        assert _init_db(p_dsn).returncode == 0
        standby = PgCluster.standby_of(primary)
        clusters.append(standby)
        standby.start()
        s_dsn = standby.write_dsn_file(root / "s.dsn")
        a = Service(root, p_dsn, region="eu-west-1").start()
        b = Service(root, s_dsn, region="eu-central-1").start()
        services += [a, b]
        assert a.proc is not None and b.proc is not None
        a_pid, b_pid = a.proc.pid, b.proc.pid

        # The standby answers reads, refuses writes with 503, and is healthy but not writable.
        status, health, _ = http_json("GET", b.url + "/healthz")
        assert status == 200 and health["db"] == "up" and health["db_writable"] is False
        assert http_json("GET", b.url + "/healthz?require=writable")[0] == 503
        status, err, _, _ = _pay(b.url)
        assert status == 503 and err == {"error": "database is read-only"}
        status, paid, _, _ = _pay(a.url)
        assert status == 201
        standby.wait_replayed(primary)
        assert http_json("GET", f"{b.url}/payments/{paid['id']}")[1]["id"] == paid["id"]

        # The primary stops: 503 with db down, then it comes back and so does the service.
        primary.stop("immediate")
        status, health, _ = http_json("GET", a.url + "/healthz")
        assert status == 503 and health["db"] == "down" and health["db_writable"] is False
        status, err, _, _ = _pay(a.url)
        assert status == 503 and err == {"error": "database unavailable"}
        primary.start()
        wait_for(lambda: http_json("GET", a.url + "/healthz")[0] == 200, timeout_s=10)
        assert _pay(a.url)[0] == 201

        # Promotion: the same service process sees the standby become writable.
        standby.wait_replayed(primary)
        standby.promote()
        wait_for(lambda: http_json("GET", b.url + "/healthz")[1]["db_writable"], timeout_s=10)
        status, on_b, _, _ = _pay(b.url)
        assert status == 201, on_b

        # Repointing by rewriting the DSN file (old primary gone), still without a restart.
        primary.stop("immediate")
        assert _pay(a.url)[0] == 503
        standby.write_dsn_file(p_dsn)
        status, via_a, _, _ = _pay(a.url)
        assert status == 201, via_a
        assert http_json("GET", f"{b.url}/payments/{via_a['id']}")[0] == 200
        assert http_json("GET", b.url + "/ledger/verify")[1]["balanced"] is True

        assert (a.proc.pid, b.proc.pid) == (a_pid, b_pid)
        assert a.proc.poll() is None and b.proc.poll() is None
    finally:
        for s in services:
            s.stop()
        destroy(root, clusters)
