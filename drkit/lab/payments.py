"""The lab's reference payments API: one process per region instance, a double-entry ledger.

Run it as::

    python -m drkit.lab.payments init-db --dsn-file F
    python -m drkit.lab.payments serve --region eu-west-1 --instance 1 --port 17411 \\
        --dsn-file F --version 1.0.0 [--host 127.0.0.1] [--pidfile P]

The DSN lives in a file (it holds a password) so it never shows in `ps`; the file must not be
readable by group or others. It is re-read whenever a new database connection is opened, so a
service can be pointed at another database (a promoted standby, a rebuilt primary) by rewriting
the file, without a restart.

The database underneath may stop, restart, be promoted or rebuilt while the service runs: every
request borrows a connection from a tiny pool that pings reused connections first and drops the
whole pool on a connection error, so the service heals by itself. While the database is down
the API answers 503 {"error": "database unavailable"}; a write against a hot standby answers
503 {"error": "database is read-only"}.

Ledger model (all amounts in cents, balance = credits - debits of an account):

- authorize: debit `from_account`, credit `holds:{from_account}` (the money is held);
- capture:   debit `holds:{from_account}`, credit `to_account`;
- refund:    debit `to_account`, credit `from_account`.

Every transition writes its debit/credit pair in the same transaction as the status change, so
the ledger is balanced after any crash.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import re
import signal
import stat
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
from psycopg import errors as pgerrors
from psycopg.conninfo import conninfo_to_dict

MAX_BODY_BYTES = 64 * 1024
# libpq refuses connect_timeout below 2 s; a client times out first anyway (the smoke flows use
# ~1 s), and a refused port fails at once.
CONNECT_TIMEOUT_S = 2
# A statement stuck behind a hung database must not pin a handler thread forever.
STATEMENT_TIMEOUT_MS = 5000
POOL_MAX_IDLE = 8

SCHEMA_LOCK_ID = 0x64726B6974  # "drkit": serialises concurrent init-db runs

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS payments (
    id              uuid PRIMARY KEY,
    idempotency_key text UNIQUE,
    reference       text,
    amount_cents    bigint NOT NULL CHECK (amount_cents > 0),
    currency        text NOT NULL,
    from_account    text NOT NULL,
    to_account      text NOT NULL,
    status          text NOT NULL CHECK (status IN ('authorized', 'captured', 'refunded')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
-- text_pattern_ops lets `reference LIKE 'prefix%'` use the index whatever the collation.
CREATE INDEX IF NOT EXISTS payments_reference_idx ON payments (reference text_pattern_ops);
CREATE TABLE IF NOT EXISTS ledger_entries (
    id           bigserial PRIMARY KEY,
    payment_id   uuid NOT NULL REFERENCES payments (id),
    account      text NOT NULL,
    direction    text NOT NULL CHECK (direction IN ('debit', 'credit')),
    amount_cents bigint NOT NULL CHECK (amount_cents > 0),
    kind         text NOT NULL CHECK (kind IN ('authorize', 'capture', 'refund')),
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS ledger_entries_account_idx ON ledger_entries (account);
CREATE INDEX IF NOT EXISTS ledger_entries_payment_idx ON ledger_entries (payment_id);
"""


class PaymentStatus(StrEnum):
    AUTHORIZED = "authorized"
    CAPTURED = "captured"
    REFUNDED = "refunded"


class Direction(StrEnum):
    DEBIT = "debit"
    CREDIT = "credit"


# transition name -> (required current status, new status, account pair builder)
_TRANSITIONS: dict[str, tuple[PaymentStatus, PaymentStatus]] = {
    "capture": (PaymentStatus.AUTHORIZED, PaymentStatus.CAPTURED),
    "refund": (PaymentStatus.CAPTURED, PaymentStatus.REFUNDED),
}


def _hold_account(account: str) -> str:
    return f"holds:{account}"


def _ledger_pair(kind: str, from_account: str, to_account: str) -> tuple[str, str]:
    """(debited account, credited account) for a ledger movement of `kind`."""
    if kind == "authorize":
        return from_account, _hold_account(from_account)
    if kind == "capture":
        return _hold_account(from_account), to_account
    if kind == "refund":
        return to_account, from_account
    raise ValueError(f"unknown ledger movement {kind!r}")


# --------------------------------------------------------------------------------------------
# errors that map to HTTP answers


class ApiError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class DatabaseUnavailable(ApiError):
    def __init__(self) -> None:
        super().__init__(HTTPStatus.SERVICE_UNAVAILABLE, "database unavailable")


class DatabaseReadOnly(ApiError):
    def __init__(self) -> None:
        super().__init__(HTTPStatus.SERVICE_UNAVAILABLE, "database is read-only")


class DsnFileError(Exception):
    """The DSN file is missing, unreadable, empty or too open (exit 2)."""


def read_dsn(path: Path) -> str:
    """Read the DSN from `path`; refuse a file that group or others can read (it holds a
    password). Messages name the file, never its content."""
    try:
        st = path.stat()
    except OSError as e:
        raise DsnFileError(f"{path}: cannot read the DSN file ({e.strerror})") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise DsnFileError(
            f"{path}: the DSN file is accessible by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); it holds a password: chmod 600 it"
        )
    try:
        dsn = path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise DsnFileError(f"{path}: cannot read the DSN file ({e.strerror})") from None
    if not dsn:
        raise DsnFileError(f"{path}: the DSN file is empty")
    return dsn


# --------------------------------------------------------------------------------------------
# a tiny reconnecting pool


class ConnectionPool:
    """Idle connections in a LIFO list; reused ones are pinged before use.

    Any connection-level error drops every idle connection (they all point at the same server,
    which has just gone away) and bumps a generation so connections checked out before the
    failure are not returned to the pool. A write is never retried here: a failed request
    answers 503 and the client retries (with its Idempotency-Key)."""

    def __init__(self, dsn_file: Path, max_idle: int = POOL_MAX_IDLE) -> None:
        self._dsn_file = dsn_file
        self._max_idle = max_idle
        self._idle: list[tuple[int, psycopg.Connection[Any]]] = []
        self._generation = 0
        self._dsn_seen: str | None = None
        self._lock = threading.Lock()

    def _connect(self) -> psycopg.Connection[Any]:
        dsn = read_dsn(self._dsn_file)
        with self._lock:
            if dsn != self._dsn_seen:
                # The file was rewritten to point elsewhere: the idle connections are stale.
                self._dsn_seen = dsn
                self._drop_idle_locked()
        return psycopg.connect(dsn, autocommit=True, **_connect_overrides(dsn))

    def _drop_idle_locked(self) -> None:
        self._generation += 1
        idle, self._idle = self._idle, []
        for _, conn in idle:
            _close_quietly(conn)

    def invalidate(self) -> None:
        with self._lock:
            self._drop_idle_locked()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        conn: psycopg.Connection[Any] | None = None
        generation = 0
        while True:
            with self._lock:
                if not self._idle:
                    break
                generation, candidate = self._idle.pop()
            try:
                candidate.execute("SELECT 1")
                conn = candidate
                break
            except psycopg.Error:
                # The server went away since this connection was parked; so did its siblings.
                _close_quietly(candidate)
                self.invalidate()
        if conn is None:
            with self._lock:
                generation = self._generation
            try:
                conn = self._connect()
            except psycopg.OperationalError as e:
                raise DatabaseUnavailable() from e
            except DsnFileError as e:
                # Rewritten badly at runtime: say so in the log (path only), answer 503.
                sys.stderr.write(f"payments: {e}\n")
                raise DatabaseUnavailable() from e
        healthy = False
        try:
            yield conn
            healthy = True
        except psycopg.OperationalError as e:
            self.invalidate()
            raise DatabaseUnavailable() from e
        except pgerrors.ReadOnlySqlTransaction as e:
            healthy = True
            raise DatabaseReadOnly() from e
        except ApiError:
            healthy = True  # a 404 or 409 decided inside a transaction: the connection is fine
            raise
        except psycopg.Error:
            # A statement error leaves the connection usable (autocommit, transaction rolled
            # back); anything odd about its state makes us drop it instead.
            healthy = not conn.broken and conn.info.transaction_status == 0
            raise
        finally:
            if healthy and not conn.broken:
                with self._lock:
                    if generation == self._generation and len(self._idle) < self._max_idle:
                        self._idle.append((generation, conn))
                        conn = None
            if conn is not None:
                _close_quietly(conn)

    def close(self) -> None:
        self.invalidate()


def _connect_overrides(dsn: str) -> dict[str, Any]:
    """Connection settings the service needs, without clobbering what the DSN file says
    (keyword arguments win over the DSN in psycopg, so only fill in what is missing)."""
    try:
        given = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        given = {}  # psycopg.connect will report the bad DSN itself
    settings: dict[str, Any] = {
        "options": " ".join(
            part
            for part in (
                str(given.get("options") or ""),
                f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c timezone=UTC",
            )
            if part
        )
    }
    if "connect_timeout" not in given:
        settings["connect_timeout"] = CONNECT_TIMEOUT_S
    if "application_name" not in given:
        settings["application_name"] = "drkit-payments"
    return settings


def _close_quietly(conn: psycopg.Connection[Any]) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - closing a dead connection must never raise
        pass


# --------------------------------------------------------------------------------------------
# the domain


@dataclass(frozen=True)
class PaymentRequest:
    amount_cents: int
    currency: str
    from_account: str
    to_account: str
    reference: str | None


_CURRENCY = re.compile(r"^[A-Z]{3}$")
_ACCOUNT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")


def parse_payment_request(body: Any) -> PaymentRequest:
    if not isinstance(body, dict):
        raise ApiError(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
    amount = body.get("amount_cents")
    # bool is an int in Python; `true` is not an amount.
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise ApiError(HTTPStatus.BAD_REQUEST, "amount_cents must be an integer > 0")
    if amount > 10**15:
        raise ApiError(HTTPStatus.BAD_REQUEST, "amount_cents is too large")
    currency = body.get("currency")
    if not isinstance(currency, str) or not _CURRENCY.match(currency):
        raise ApiError(HTTPStatus.BAD_REQUEST, "currency must be a 3-letter ISO code like EUR")
    accounts = []
    for field in ("from_account", "to_account"):
        value = body.get(field)
        if not isinstance(value, str) or not _ACCOUNT.match(value):
            raise ApiError(
                HTTPStatus.BAD_REQUEST,
                f"{field} must be 1-128 characters of letters, digits and _.:@-",
            )
        if value.startswith("holds:"):
            raise ApiError(HTTPStatus.BAD_REQUEST, f"{field}: holds: accounts are internal")
        accounts.append(value)
    if accounts[0] == accounts[1]:
        raise ApiError(HTTPStatus.BAD_REQUEST, "from_account and to_account must differ")
    reference = body.get("reference")
    if reference is not None and (not isinstance(reference, str) or len(reference) > 256):
        raise ApiError(HTTPStatus.BAD_REQUEST, "reference must be a string of at most 256 chars")
    return PaymentRequest(amount, currency, accounts[0], accounts[1], reference)


_PAYMENT_COLUMNS = (
    "id, idempotency_key, reference, amount_cents, currency, from_account, to_account, "
    "status, created_at, updated_at"
)


def _payment_json(row: tuple[Any, ...], *, as_created: bool = False) -> dict[str, Any]:
    pid, _key, reference, amount, currency, from_acc, to_acc, status, created, updated = row
    return {
        "id": str(pid),
        # An idempotent replay returns the body of the original 201, whose status was
        # necessarily "authorized", even if the payment has moved on since.
        "status": str(PaymentStatus.AUTHORIZED) if as_created else status,
        "amount_cents": amount,
        "currency": currency,
        "from_account": from_acc,
        "to_account": to_acc,
        "reference": reference,
        "created_at": _iso(created),
        "updated_at": _iso(created if as_created else updated),
    }


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _write_ledger(
    cur: psycopg.Cursor[Any], payment_id: uuid.UUID, kind: str, amount: int, debit: str, credit: str
) -> None:
    cur.executemany(
        "INSERT INTO ledger_entries (payment_id, account, direction, amount_cents, kind) "
        "VALUES (%s, %s, %s, %s, %s)",
        [
            (payment_id, debit, str(Direction.DEBIT), amount, kind),
            (payment_id, credit, str(Direction.CREDIT), amount, kind),
        ],
    )


@dataclass(frozen=True)
class Reply:
    status: HTTPStatus
    body: Any
    headers: tuple[tuple[str, str], ...] = ()


class PaymentsApi:
    """The endpoints, independent of the HTTP plumbing."""

    def __init__(self, pool: ConnectionPool, region: str, instance: str, version: str) -> None:
        self.pool = pool
        self.region = region
        self.instance = instance
        self.version = version

    def healthz(self, require_writable: bool) -> Reply:
        body: dict[str, Any] = {
            "status": "ok",
            "region": self.region,
            "instance": self.instance,
            "version": self.version,
            "db_writable": False,
            "db": "down",
        }
        try:
            with self.pool.connection() as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        except DatabaseUnavailable:
            body["status"] = "degraded"
            return Reply(HTTPStatus.SERVICE_UNAVAILABLE, body)
        body["db"] = "up"
        body["db_writable"] = not bool(row and row[0])
        # `?require=writable` lets a load balancer health check route only to the writable side.
        if require_writable and not body["db_writable"]:
            body["status"] = "read-only"
            return Reply(HTTPStatus.SERVICE_UNAVAILABLE, body)
        return Reply(HTTPStatus.OK, body)

    def authorize(self, body: Any, idempotency_key: str | None) -> Reply:
        req = parse_payment_request(body)
        if idempotency_key is not None and not (0 < len(idempotency_key) <= 255):
            raise ApiError(HTTPStatus.BAD_REQUEST, "Idempotency-Key must be 1-255 characters")
        pid = uuid.uuid4()
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            # ON CONFLICT DO NOTHING waits for a concurrent insert of the same key to commit
            # or roll back, so exactly one request creates the payment and moves money.
            cur.execute(
                "INSERT INTO payments (id, idempotency_key, reference, amount_cents, currency, "
                "from_account, to_account, status) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                f"ON CONFLICT (idempotency_key) DO NOTHING RETURNING {_PAYMENT_COLUMNS}",
                (
                    pid,
                    idempotency_key,
                    req.reference,
                    req.amount_cents,
                    req.currency,
                    req.from_account,
                    req.to_account,
                    str(PaymentStatus.AUTHORIZED),
                ),
            )
            row = cur.fetchone()
            if row is None:
                cur.execute(
                    f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE idempotency_key = %s",
                    (idempotency_key,),
                )
                existing = cur.fetchone()
                if existing is None:  # the conflicting insert rolled back between statements
                    raise ApiError(HTTPStatus.CONFLICT, "concurrent request, retry")
                original = (existing[3], existing[4], existing[5], existing[6], existing[2])
                if original != (
                    req.amount_cents,
                    req.currency,
                    req.from_account,
                    req.to_account,
                    req.reference,
                ):
                    raise ApiError(
                        HTTPStatus.UNPROCESSABLE_ENTITY,
                        "Idempotency-Key was already used with a different request",
                    )
                return Reply(
                    HTTPStatus.OK,
                    _payment_json(existing, as_created=True),
                    (("Idempotent-Replayed", "true"),),
                )
            debit, credit = _ledger_pair("authorize", req.from_account, req.to_account)
            _write_ledger(cur, pid, "authorize", req.amount_cents, debit, credit)
        return Reply(HTTPStatus.CREATED, _payment_json(row), (("Location", f"/payments/{pid}"),))

    def transition(self, payment_id: uuid.UUID, action: str) -> Reply:
        required, new = _TRANSITIONS[action]
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            # The conditional UPDATE takes the row lock: two captures cannot both succeed.
            cur.execute(
                "UPDATE payments SET status = %s, updated_at = now() "
                f"WHERE id = %s AND status = %s RETURNING {_PAYMENT_COLUMNS}",
                (str(new), payment_id, str(required)),
            )
            row = cur.fetchone()
            if row is None:
                cur.execute("SELECT status FROM payments WHERE id = %s", (payment_id,))
                current = cur.fetchone()
                if current is None:
                    raise ApiError(HTTPStatus.NOT_FOUND, f"payment {payment_id} not found")
                raise ApiError(
                    HTTPStatus.CONFLICT,
                    f"cannot {action} a payment that is {current[0]} (it must be {required})",
                )
            debit, credit = _ledger_pair(action, row[5], row[6])
            _write_ledger(cur, payment_id, action, row[3], debit, credit)
        return Reply(HTTPStatus.OK, _payment_json(row))

    def get_payment(self, payment_id: uuid.UUID) -> Reply:
        with self.pool.connection() as conn:
            row = conn.execute(
                f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE id = %s", (payment_id,)
            ).fetchone()
        if row is None:
            raise ApiError(HTTPStatus.NOT_FOUND, f"payment {payment_id} not found")
        return Reply(HTTPStatus.OK, _payment_json(row))

    def list_by_prefix(self, prefix: str) -> Reply:
        if not prefix:
            raise ApiError(HTTPStatus.BAD_REQUEST, "reference_prefix is required")
        # Escape LIKE metacharacters: a run id may contain '_' or '%'.
        pattern = re.sub(r"([\\%_])", r"\\\1", prefix) + "%"
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT id, reference, created_at FROM payments "
                "WHERE reference LIKE %s ESCAPE '\\' ORDER BY reference",
                (pattern,),
                # A prepared (generic) plan could not use the prefix index; keep custom plans.
                prepare=False,
            ).fetchall()
        items = [{"id": str(r[0]), "reference": r[1], "created_at": _iso(r[2])} for r in rows]
        return Reply(HTTPStatus.OK, items)

    def balance(self, account: str) -> Reply:
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT coalesce(sum(CASE direction WHEN 'credit' THEN amount_cents "
                "ELSE -amount_cents END), 0) FROM ledger_entries WHERE account = %s",
                (account,),
            ).fetchone()
        return Reply(
            HTTPStatus.OK, {"account": account, "balance_cents": int(row[0] if row else 0)}
        )

    def verify_ledger(self) -> Reply:
        with self.pool.connection() as conn:
            # One snapshot for both queries so concurrent writes cannot fake an imbalance.
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                totals = conn.execute(
                    "SELECT coalesce(sum(amount_cents) FILTER (WHERE direction = 'debit'), 0), "
                    "coalesce(sum(amount_cents) FILTER (WHERE direction = 'credit'), 0), "
                    "count(*) FROM ledger_entries"
                ).fetchone()
                unbalanced = conn.execute(
                    "SELECT count(*) FROM (SELECT payment_id FROM ledger_entries "
                    "GROUP BY payment_id HAVING sum(CASE direction WHEN 'debit' "
                    "THEN amount_cents ELSE -amount_cents END) <> 0) AS u"
                ).fetchone()
        assert totals is not None and unbalanced is not None
        debits, credits, entries = (int(v) for v in totals)
        return Reply(
            HTTPStatus.OK,
            {
                "balanced": debits == credits and int(unbalanced[0]) == 0,
                "debits_cents": debits,
                "credits_cents": credits,
                "entries": entries,
                "unbalanced_payments": int(unbalanced[0]),
            },
        )


# --------------------------------------------------------------------------------------------
# HTTP plumbing

_PAYMENT_PATH = re.compile(r"^/payments/([^/]+)(?:/(capture|refund))?$")
_BALANCE_PATH = re.compile(r"^/accounts/([^/]+)/balance$")


def _parse_uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise ApiError(HTTPStatus.NOT_FOUND, f"payment {text[:64]} not found") from None


class Handler(BaseHTTPRequestHandler):
    server_version = "drkit-payments"
    # One request per connection: a draining instance then never holds idle keep-alive
    # connections that a proxy could reuse at the moment it exits.
    protocol_version = "HTTP/1.0"
    timeout = 10  # a slow or silent client must not pin a thread forever

    api: PaymentsApi  # set on the subclass built by make_server
    token: str | None = None  # when set, every route but /healthz needs it (make_server)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        started = time.monotonic()
        status = HTTPStatus.INTERNAL_SERVER_ERROR
        try:
            reply = self._route(method)
        except ApiError as e:
            reply = Reply(e.status, {"error": e.message})
        except psycopg.Error as e:
            # A statement error we did not foresee: say which class, never the SQL or DSN.
            reply = Reply(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": type(e).__name__})
        except Exception as e:  # noqa: BLE001 - one bad request must not kill the thread
            reply = Reply(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": type(e).__name__})
        status = reply.status
        try:
            self._send(reply)
        except OSError:
            pass  # the client went away
        finally:
            elapsed_ms = (time.monotonic() - started) * 1000
            path = urlsplit(self.path).path
            sys.stderr.write(
                f"{datetime.now(UTC).isoformat(timespec='milliseconds')} "
                f"{self.api.region}/{self.api.instance} {self.client_address[0]} "
                f'"{method} {path}" {int(status)} {elapsed_ms:.1f}ms\n'
            )

    def _route(self, method: str) -> Reply:
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        query = parse_qs(url.query)
        api = self.api
        if path == "/healthz":
            self._allow(method, "GET")
            return api.healthz(require_writable=query.get("require", [""])[0] == "writable")
        self._authorize()
        if path == "/payments":
            if method == "POST":
                return api.authorize(self._json_body(), self.headers.get("Idempotency-Key"))
            self._allow(method, "GET")
            return api.list_by_prefix(query.get("reference_prefix", [""])[0])
        if path == "/ledger/verify":
            self._allow(method, "GET")
            return api.verify_ledger()
        m = _BALANCE_PATH.match(path)
        if m:
            self._allow(method, "GET")
            return api.balance(m.group(1))
        m = _PAYMENT_PATH.match(path)
        if m:
            pid = _parse_uuid(m.group(1))
            if m.group(2):
                self._allow(method, "POST")
                return api.transition(pid, m.group(2))
            self._allow(method, "GET")
            return api.get_payment(pid)
        raise ApiError(HTTPStatus.NOT_FOUND, f"no route for {path[:100]}")

    def _authorize(self) -> None:
        """`Authorization: Bearer <token>`, compared in constant time (issue 16: the lab's API
        took payments from any local user)."""
        if self.token is None:
            return
        given = self.headers.get("Authorization") or ""
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                value.strip().encode("utf-8", "replace"), self.token.encode("utf-8")):
            raise ApiError(HTTPStatus.UNAUTHORIZED, "a bearer token is required "
                           "(Authorization: Bearer <the lab's secrets/api.token>)")

    @staticmethod
    def _allow(method: str, allowed: str) -> None:
        if method != allowed:
            raise ApiError(HTTPStatus.METHOD_NOT_ALLOWED, f"use {allowed}")

    def _json_body(self) -> Any:
        try:
            length = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            raise ApiError(HTTPStatus.BAD_REQUEST, "bad Content-Length") from None
        if length <= 0:
            raise ApiError(HTTPStatus.BAD_REQUEST, "a JSON body is required")
        if length > MAX_BODY_BYTES:
            raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large")
        raw = self.rfile.read(length)
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(HTTPStatus.BAD_REQUEST, "the body is not valid JSON") from None

    def _send(self, reply: Reply) -> None:
        payload = json.dumps(reply.body).encode("utf-8")
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # _dispatch logs one line per request itself, with its duration

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        # Protocol errors (bad request line, timeouts) still get a line.
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        sys.stderr.write(f"{stamp} {self.client_address[0]} {format % args}\n")


class PaymentsServer(ThreadingHTTPServer):
    # Non-daemon handler threads are joined by server_close(): SIGTERM lets in-flight requests
    # finish before the process exits.
    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: a burst of concurrent clients (a proxy
    # retrying after failover, a load test) overflows it and gets connection resets.
    request_queue_size = 256


def make_server(host: str, port: int, api: PaymentsApi,
                token: str | None = None) -> PaymentsServer:
    handler = type("BoundHandler", (Handler,), {"api": api, "token": token})
    return PaymentsServer((host, port), handler)


# --------------------------------------------------------------------------------------------
# commands


def init_db(dsn_file: Path) -> None:
    """Create the schema idempotently (run on the primary; standbys get it by replication)."""
    dsn = read_dsn(dsn_file)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_ID,))
            conn.execute(SCHEMA_SQL)


def _write_pidfile(path: Path) -> None:
    from drkit.files import atomic_write

    atomic_write(path, f"{os.getpid()}\n".encode(), mode=0o644)


def _remove_pidfile(path: Path) -> None:
    try:
        if path.read_text().strip() == str(os.getpid()):
            path.unlink()
    except OSError:
        pass


def serve(args: argparse.Namespace) -> int:
    dsn_file = Path(args.dsn_file)
    read_dsn(dsn_file)  # fail fast on a missing or too-open file; the DB itself may be down
    token = None
    if args.token_file:
        from drkit.errors import BadInput
        from drkit.lab.security import read_api_token

        try:
            token = read_api_token(Path(args.token_file))
        except BadInput as e:
            raise DsnFileError(str(e)) from None
    pool = ConnectionPool(dsn_file)
    api = PaymentsApi(pool, args.region, str(args.instance), args.version)
    try:
        server = make_server(args.host, args.port, api, token)
    except OSError as e:
        sys.stderr.write(f"payments: cannot listen on {args.host}:{args.port}: {e.strerror}\n")
        return 3
    pidfile = Path(args.pidfile) if args.pidfile else None
    if pidfile:
        _write_pidfile(pidfile)

    def on_signal(signum: int, _frame: Any) -> None:
        # shutdown() blocks until serve_forever returns, and serve_forever runs in this very
        # thread: call it from another one.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sys.stderr.write(
        f"payments {args.version} region={args.region} instance={args.instance} "
        f"listening on {args.host}:{server.server_address[1]}\n"
    )
    sys.stderr.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        pool.close()
        if pidfile:
            _remove_pidfile(pidfile)
    sys.stderr.write("payments: stopped\n")
    return 0


class _ArgError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # never exit from inside argparse
        raise _ArgError(f"{self.prog}: {message}")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m drkit.lab.payments", description="drkit lab payments API")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    s = sub.add_parser("serve", help="run the API")
    s.add_argument("--region", required=True)
    s.add_argument("--instance", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--dsn-file", required=True)
    s.add_argument("--version", default="0.0.0")
    s.add_argument("--pidfile")
    s.add_argument("--token-file", help="bearer token every route but /healthz requires (0600)")
    i = sub.add_parser("init-db", help="create the schema idempotently")
    i.add_argument("--dsn-file", required=True)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except _ArgError as e:
        sys.stderr.write(f"{e}\n")
        return 2
    try:
        if args.command == "init-db":
            try:
                init_db(Path(args.dsn_file))
            except psycopg.Error as e:
                # psycopg's messages name host and user, never the password.
                sys.stderr.write(f"payments init-db: database error: {e}\n")
                return 3
            sys.stderr.write("payments init-db: schema ready\n")
            return 0
        return serve(args)
    except DsnFileError as e:
        sys.stderr.write(f"payments: {e}\n")
        return 2
    except KeyboardInterrupt:
        return 3


if __name__ == "__main__":
    sys.exit(main())
