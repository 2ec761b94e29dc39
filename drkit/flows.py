"""Client-side traffic for the payments API: smoke flows, the RPO canary, reconciliation, load.

Used by the drill (the recovery clock stops at the first all-green smoke round), by runbooks
(zero failed requests during a rolling patch) and by tests. Stdlib HTTP only: `http.client`
with an `ssl` context that verifies against a given CA file (or the system CAs), so the public
entry point is checked exactly as a customer would reach it. Both http:// and https:// work.

What the flows and the canary send and expect is declared in a flow pack (issue 14; the lab's is
flows/payments-lab.yml, the default): any payments API gets its own pack; nothing here knows
the lab's paths. Credentials come from environment variables or files the pack names, are read
when a client is made, and never appear in results (scrubbed from every detail).

Nothing here prints or exits; `python -m drkit.flows smoke ...` is a thin CLI for running the
flows by hand or from a `command` task (see `main`). The drill's smoke phase calls
`smoke_until_green` through the drkit.dr.smoke action plugin (the collection's plugins/action/).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import ssl
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from drkit.errors import BadInput, RunFailed

# The smoke loop is on the recovery clock: a short per-request timeout keeps one hung
# connection from eating seconds of measured RTO.
DEFAULT_REQUEST_TIMEOUT_S = 1.0

# The lab's flows (flows/payments-lab.yml, the default pack), in order.
FLOWS: tuple[str, ...] = (
    "authorize",
    "capture",
    "refund",
    "balance",
    "idempotent-replay",
    "ledger-verify",
)


class FlowStatus(StrEnum):
    PASS = "pass"
    FAIL = "fail"


@dataclass(frozen=True)
class FlowResult:
    flow: str
    status: FlowStatus
    duration_s: float
    detail: str
    # False: not run, its round stopped at an earlier flow's failure. A value, so the drill's
    # verdict never reads it back from the detail's words (issue 13); SmokeOutcome's JSON
    # lists these flows in `not_reached`.
    reached: bool = True

    @property
    def passed(self) -> bool:
        return self.status is FlowStatus.PASS

    def to_json(self) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "status": str(self.status),
            "duration_s": round(self.duration_s, 6),
            "detail": self.detail,
        }


@dataclass(frozen=True)
class SmokeOutcome:
    """The result of `smoke_until_green`. `green_at` is None when no round was all green."""

    started_at: datetime
    green_at: datetime | None
    attempts: int
    results: tuple[FlowResult, ...]

    @property
    def green(self) -> bool:
        return self.green_at is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "green": self.green,
            "started_at": _iso(self.started_at),
            "green_at": _iso(self.green_at) if self.green_at else None,
            "attempts": self.attempts,
            "results": [r.to_json() for r in self.results],
            "not_reached": [r.flow for r in self.results if not r.reached],
        }


# --------------------------------------------------------------------------------------------
# HTTP


class FlowError(Exception):
    """A step of a flow did not get the answer it needed; the message is the FlowResult
    detail."""


@dataclass(frozen=True)
class Response:
    status: int
    body: Any
    headers: dict[str, str]


class Client:
    """A tiny JSON client over one entry URL. A new connection per request: after a failover
    the next request must go wherever the entry point now sends it, not down a kept-alive
    connection to the old backend. Thread-safe (no shared connection state)."""

    def __init__(
        self,
        entry_url: str,
        ca_file: str | None = None,
        timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        token: str | None = None,
    ) -> None:
        parts = urlsplit(entry_url)
        # The lab's API takes requests only with its bearer token (issue 16).
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadInput(f"entry URL {entry_url!r} must look like https://host[:port][/prefix]")
        self.entry_url = entry_url
        self.scheme = parts.scheme
        self.host = parts.hostname
        try:
            self.port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as e:
            raise BadInput(f"entry URL {entry_url!r}: {e}") from None
        self.prefix = parts.path.rstrip("/")
        self.timeout_s = timeout_s
        self.context: ssl.SSLContext | None = None
        if parts.scheme == "https":
            try:
                # Built once: loading a CA bundle per request would cost more than the request.
                self.context = ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as e:
                raise BadInput(f"CA file {ca_file}: cannot load it ({e})") from None

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Response:
        """Send one request. Raises OSError (incl. ssl errors, timeouts) or
        http.client.HTTPException on transport failures; HTTP statuses are returned."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        conn: http.client.HTTPConnection
        if self.context is not None:
            conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout, context=self.context
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            hdrs = {"Accept": "application/json", "Connection": "close", **self.auth,
                    **(headers or {})}
            payload = None
            if body is not None:
                payload = json.dumps(body).encode("utf-8")
                hdrs["Content-Type"] = "application/json"
            conn.request(method, self.prefix + path, body=payload, headers=hdrs)
            resp = conn.getresponse()
            raw = resp.read()
            try:
                decoded = json.loads(raw) if raw else None
            except ValueError:
                decoded = raw[:200].decode("utf-8", "replace")
            return Response(resp.status, decoded, {k.lower(): v for k, v in resp.getheaders()})
        finally:
            conn.close()

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        expect: Sequence[int] = (200,),
        headers: dict[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Response:
        """Like `request`, but turns transport failures and unexpected statuses into a
        FlowError whose message says which step failed and why."""
        what = f"{method} {path.split('?')[0]}"
        try:
            resp = self.request(method, path, body, headers, timeout_s)
        except TimeoutError:
            raise FlowError(f"{what}: timed out") from None
        except ssl.SSLCertVerificationError as e:
            raise FlowError(f"{what}: certificate verify failed: {e.verify_message}") from None
        except ssl.SSLError as e:
            raise FlowError(f"{what}: TLS error: {e.reason or e}") from None
        except (OSError, http.client.HTTPException) as e:
            raise FlowError(f"{what}: {_transport_error(e)}") from None
        if resp.status not in expect:
            raise FlowError(f"{what}: HTTP {resp.status} {_error_text(resp.body)}".rstrip())
        return resp


def _transport_error(e: BaseException) -> str:
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {e.verify_message}"
    text = str(e) or type(e).__name__
    return text[:200]


def _error_text(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"][:200]
    if isinstance(body, str):
        return body[:200]
    return ""


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat()


def _now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------------------------
# smoke flows, declared (issue 14)
#
# A flow pack (flows/payments-lab.yml is the lab's) declares, for one payments API, its smoke
# flows (steps: a request, the expected status and JSON fields, values captured for later
# steps) and its RPO canary (a write endpoint, a read-back endpoint, a ledger check). drkit.config
# validates a pack against its schema (`plan validate`); here a validated pack, as plain data
# (the drill passes it to the smoke action as extra vars), is run. Each flow is self-contained
# (its own payments, its own fresh accounts: ${uuid}), so flows run in any subset and order.

DEFAULT_PACK = Path(__file__).resolve().parents[1] / "flows" / "payments-lab.yml"
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.-]*)\}")
_MISSING = object()


def _subst(value: Any, env: Mapping[str, Any], *, in_path: bool = False) -> Any:
    """`value` with ${name} replaced from `env`. A string that is exactly one placeholder
    becomes the variable's value (its type kept); in a path, values are percent-encoded."""
    if isinstance(value, dict):
        return {str(_subst(k, env)): _subst(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_subst(v, env) for v in value]
    if not isinstance(value, str):
        return value
    whole = _PLACEHOLDER.fullmatch(value)
    if whole and not in_path:
        return _lookup(whole.group(1), env)

    def one(m: re.Match[str]) -> str:
        got = _lookup(m.group(1), env)
        text = json.dumps(got) if isinstance(got, bool) else str(got)
        return quote(text, safe="") if in_path else text

    return _PLACEHOLDER.sub(one, value)


def _lookup(name: str, env: Mapping[str, Any]) -> Any:
    got = env.get(name, _MISSING)
    if got is _MISSING:
        raise FlowError(f"${{{name}}} is not set (not a pack variable, nor captured by an "
                        "earlier step)")
    return got


def _field(body: Any, path: str) -> Any:
    """The value at a dotted path (`charge.id`, `items.0.ref`; "" is the body), or _MISSING."""
    node = body
    for part in path.split(".") if path else ():
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


@dataclass(frozen=True)
class Step:
    """One request of a flow, what must come back, and what to keep for later steps."""

    name: str
    method: str
    path: str
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    status: tuple[int, ...] = (200,)
    json: Mapping[str, Any] = field(default_factory=dict)  # dotted field -> expected value
    capture: Mapping[str, str] = field(default_factory=dict)  # variable -> dotted field

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Step:
        req, exp = d.get("request") or {}, d.get("expect") or {}
        status = exp.get("status", 200)
        method, path = str(req.get("method", "GET")).upper(), str(req.get("path", "/"))
        return cls(name=str(d.get("name") or f"{method} {path}"), method=method, path=path,
                   body=req.get("body"), headers=dict(req.get("headers") or {}),
                   status=tuple(status) if isinstance(status, list | tuple) else (int(status),),
                   json=dict(exp.get("json") or {}), capture=dict(d.get("capture") or {}))

    def run(self, client: Client, env: dict[str, Any]) -> Response:
        """Send the request; check the status and fields; add the captures to `env`."""
        path = _subst(self.path, env, in_path=True)
        what = f"{self.method} {self.path.split('?')[0]}"
        headers = {str(k): str(v) for k, v in _subst(dict(self.headers), env).items()}
        resp = client.call(self.method, path, _subst(self.body, env), expect=self.status,
                           headers=headers or None)
        for name, want in self.json.items():
            got, expected = _field(resp.body, name), _subst(want, env)
            if got is _MISSING:
                raise FlowError(f"{what}: no {name!r} in the answer")
            if got != expected or isinstance(got, bool) != isinstance(expected, bool):
                raise FlowError(f"{what}: {name} is {got!r}, expected {expected!r}")
        for var, where in self.capture.items():
            got = _field(resp.body, where)
            if got is _MISSING or got is None or isinstance(got, dict | list):
                raise FlowError(f"{what}: the answer has no {where!r} (to keep as {var})")
            env[var] = got
        return resp


@dataclass(frozen=True)
class Flow:
    name: str
    steps: tuple[Step, ...]
    detail: str = ""  # the pass message, with ${...} from the flow's variables

    @classmethod
    def from_json(cls, name: str, d: Mapping[str, Any]) -> Flow:
        return cls(name, tuple(Step.from_json(s) for s in d.get("steps") or ()),
                   str(d.get("detail") or ""))


@dataclass(frozen=True)
class SecretSource:
    """Where a secret's value comes from: an environment variable or a file (one line). The
    value is read when a client is made, and never kept in anything that is written."""

    name: str
    env: str | None = None
    file: str | None = None
    required: bool = True


@dataclass(frozen=True)
class CanarySpec:
    write: Step  # captures payment_id: the acknowledged payment's id
    read_back: Step  # lists the payments whose reference starts with ${prefix}
    items: str = ""  # where the list is in the read-back answer ("" = the answer itself)
    reference: str = "reference"  # each item's field holding the reference
    ledger: Step | None = None
    ledger_fields: Mapping[str, str] = field(default_factory=dict)  # balanced, debits_cents...


@dataclass(frozen=True)
class FlowPack:
    name: str
    flows: Mapping[str, Flow]
    vars: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    secrets: tuple[SecretSource, ...] = ()
    canary: CanarySpec | None = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any], extra_vars: Mapping[str, Any] | None = None
                  ) -> FlowPack:
        """A pack from plain data (a validated pack, e.g. `model_dump()` of drkit.config's
        FlowPackModel). `extra_vars` (the environment's flow_vars, its state_dir) override the
        pack's vars."""
        if not isinstance(d, Mapping) or not isinstance(d.get("flows"), Mapping):
            raise BadInput("a flow pack must be a mapping with flows (see flows/payments-lab.yml)")
        c = d.get("canary")
        canary = None
        if isinstance(c, Mapping):
            ledger = c.get("ledger")
            canary = CanarySpec(
                write=Step.from_json(c["write"]), read_back=Step.from_json(c["read_back"]),
                items=str(c.get("read_back", {}).get("items") or ""),
                reference=str(c.get("read_back", {}).get("reference") or "reference"),
                ledger=Step.from_json(ledger) if isinstance(ledger, Mapping) else None,
                ledger_fields={k: str(ledger[k]) for k in
                               ("balanced", "debits_cents", "credits_cents", "entries")
                               if isinstance(ledger, Mapping) and ledger.get(k)})
        return cls(
            name=str(d.get("name") or "flows"),
            flows={str(k): Flow.from_json(str(k), v) for k, v in d["flows"].items()},
            vars={**dict(d.get("vars") or {}), **dict(extra_vars or {})},
            headers=dict(d.get("headers") or {}),
            secrets=tuple(SecretSource(str(k), v.get("env"), v.get("file"),
                                       bool(v.get("required", True)))
                          for k, v in (d.get("secrets") or {}).items()),
            canary=canary)

    def resolve_secrets(self, given: Mapping[str, str] | None = None) -> dict[str, str]:
        """The secrets' values: `given` first, then each source. A required one that cannot be
        read is BadInput naming its source, never a value."""
        out = dict(given or {})
        for s in self.secrets:
            if s.name in out:
                continue
            value = None
            if s.env:
                value = os.environ.get(s.env) or None
            elif s.file:
                try:
                    path = str(_subst(s.file, self.vars))
                except FlowError as e:  # e.g. ${state_dir} outside a drill
                    if s.required:
                        raise BadInput(f"flow pack {self.name}: secret {s.name}: {e}") from None
                    continue
                if Path(path).is_file():
                    value = read_token(path)
                elif s.required:
                    raise BadInput(f"flow pack {self.name}: secret {s.name}: file {path} "
                                   "does not exist")
            if value is None and s.required:
                raise BadInput(f"flow pack {self.name}: secret {s.name}: environment variable "
                               f"{s.env} is not set")
            if value is not None:
                out[s.name] = value
        return out


def load_pack(path: str | Path, extra_vars: Mapping[str, Any] | None = None) -> FlowPack:
    """A pack from its YAML file, unvalidated (drkit.config.load_flow_pack validates one)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise BadInput(f"flow pack {path}: cannot read it ({e})") from None
    return FlowPack.from_json(data, extra_vars)


_DEFAULT: FlowPack | None = None


def default_pack() -> FlowPack:
    """The lab's pack (flows/payments-lab.yml), read once."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = load_pack(DEFAULT_PACK)
    return _DEFAULT


class PackClient(Client):
    """A Client that sends the pack's headers (secrets filled in) with every request, and
    keeps secret values out of every message it raises."""

    def __init__(self, entry_url: str, ca_file: str | None, timeout_s: float,
                 pack: FlowPack, secrets: Mapping[str, str]) -> None:
        super().__init__(entry_url, ca_file, timeout_s)
        self.secret_values = tuple(v for v in secrets.values() if v)
        env = {f"secret.{k}": v for k, v in secrets.items()}
        for name, tmpl in pack.headers.items():
            try:
                self.auth[name] = str(_subst(tmpl, {**pack.vars, **env}))
            except FlowError:
                # A header naming an optional secret that is not there is left out.
                continue

    def scrub(self, text: str) -> str:
        for v in self.secret_values:
            text = text.replace(v, "***")
        return text


def _client(entry_url: str, ca_file: str | None, timeout_s: float, pack: FlowPack | None,
            token: str | None) -> PackClient:
    pack = pack or default_pack()
    return PackClient(entry_url, ca_file, timeout_s, pack,
                      pack.resolve_secrets({"token": token} if token else None))


def _check_flows(flows: Sequence[str], pack: FlowPack | None = None) -> tuple[str, ...]:
    known = tuple((pack or default_pack()).flows)
    if isinstance(flows, str):  # a bare string is a sequence of letters: refuse it clearly
        raise BadInput(f"flows must be a list of flow names, not the string {flows!r}")
    unknown = [f for f in flows if f not in known]
    if unknown:
        raise BadInput(f"unknown smoke flow(s) {', '.join(unknown)} (known: {', '.join(known)})")
    if not flows:
        raise BadInput(f"no smoke flows given (known: {', '.join(known)})")
    return tuple(flows)


def _run_flow(client: PackClient, pack: FlowPack, flow: Flow) -> str:
    env: dict[str, Any] = {**pack.vars, "uuid": uuid.uuid4().hex[:16], "flow": flow.name}
    for step in flow.steps:
        step.run(client, env)
    return str(_subst(flow.detail, env)) if flow.detail else f"{len(flow.steps)} step(s) passed"


def _run_round(
    client: PackClient, pack: FlowPack, flows: Sequence[str], stop_at_first_failure: bool
) -> list[FlowResult]:
    results: list[FlowResult] = []
    for i, name in enumerate(flows):
        started = time.monotonic()
        try:
            detail = _run_flow(client, pack, pack.flows[name])
            status = FlowStatus.PASS
        except FlowError as e:
            detail, status = str(e), FlowStatus.FAIL
        # Results are kept (run folder, evidence): no secret value in them, whatever a server
        # echoed back (issue 14).
        detail = client.scrub(detail)
        results.append(FlowResult(name, status, time.monotonic() - started, detail))
        if status is FlowStatus.FAIL and stop_at_first_failure:
            # This round cannot be all green any more; retry sooner instead of spending up to
            # a request timeout per remaining flow.
            results.extend(
                FlowResult(rest, FlowStatus.FAIL, 0.0, f"not run: {name} failed in this round",
                           reached=False)
                for rest in flows[i + 1 :]
            )
            break
    return results


def run_smoke(
    entry_url: str,
    ca_file: str | None,
    flows: Sequence[str],
    *,
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
    token: str | None = None,
    pack: FlowPack | None = None,
) -> list[FlowResult]:
    """Run each named flow of `pack` (default: the lab's) once through `entry_url`, in order;
    every flow runs (a failing one does not stop the others). Raises BadInput for an unknown
    flow, a bad URL/CA file or a required secret that cannot be read."""
    pack = pack or default_pack()
    names = _check_flows(flows, pack)
    client = _client(entry_url, ca_file, request_timeout_s, pack, token)
    return _run_round(client, pack, names, stop_at_first_failure=False)


def smoke_until_green(
    entry_url: str,
    ca_file: str | None,
    flows: Sequence[str],
    timeout_s: float,
    interval_s: float = 0.05,
    *,
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
    token: str | None = None,
    pack: FlowPack | None = None,
) -> SmokeOutcome:
    """Repeat the whole set of flows until one round passes them all, or `timeout_s` runs out.

    `green_at` is the UTC time at the end of the first all-green round: the moment the recovery
    clock stops. A round stops at its first failing flow (the rest are reported as failed, "not
    run") so the loop retries at most `interval_s` after the entry point comes back. The last
    round's results are returned either way."""
    pack = pack or default_pack()
    names = _check_flows(flows, pack)
    client = _client(entry_url, ca_file, request_timeout_s, pack, token)
    started_at = _now()
    deadline = time.monotonic() + timeout_s
    attempts = 0
    results: list[FlowResult] = []
    while True:
        attempts += 1
        results = _run_round(client, pack, names, stop_at_first_failure=True)
        if all(r.passed for r in results):
            return SmokeOutcome(started_at, _now(), attempts, tuple(results))
        if time.monotonic() + interval_s >= deadline:
            return SmokeOutcome(started_at, None, attempts, tuple(results))
        time.sleep(interval_s)


# --------------------------------------------------------------------------------------------
# canary and reconciliation


@dataclass(frozen=True)
class CanaryAck:
    """One payment the API acknowledged (HTTP 201, or 200 for an idempotent replay)."""

    seq: int
    payment_id: str
    reference: str
    acked_at: datetime


def canary_reference(run_id: str, seq: int) -> str:
    return f"canary:{run_id}:{seq:08d}"


class _Paced(threading.Thread):
    """A daemon thread calling `tick()` at `rate_per_s` until stopped. When a tick runs long
    (an outage: request timeouts) the schedule restarts instead of bursting to catch up."""

    def __init__(self, rate_per_s: float, name: str) -> None:
        if rate_per_s <= 0:
            raise BadInput(f"rate_per_s must be > 0, not {rate_per_s}")
        super().__init__(name=name, daemon=True)
        self._period = 1.0 / rate_per_s
        self._stop_event = threading.Event()

    def tick(self) -> None:
        """One paced action: each writer (the canary, the load generator) defines its own."""
        raise TypeError(f"{type(self).__name__} must define tick()")

    def run(self) -> None:
        next_at = time.monotonic()
        while not self._stop_event.is_set():
            self.tick()
            next_at += self._period
            delay = next_at - time.monotonic()
            if delay < -self._period:
                next_at = time.monotonic()
            elif delay > 0 and self._stop_event.wait(delay):
                break

    def halt(self, timeout_s: float) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout_s)


class Canary:
    """Writes numbered payments (reference `canary:{run_id}:{seq:08d}`) through the entry point
    in a background thread, and records every acknowledged one.

    Each sequence number is retried, with the same Idempotency-Key, until it is acknowledged,
    so acknowledged sequence numbers have no gaps and a retry after an outage can never create
    a second payment. Failed attempts (transport errors, 5xx) are counted in `failures`, never
    raised: the canary must keep writing across the outage it measures. A 4xx answer (the
    request itself is wrong) is counted too, and the canary moves to the next number."""

    def __init__(
        self,
        entry_url: str,
        ca_file: str | None,
        run_id: str,
        rate_per_s: float = 20,
        *,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        token: str | None = None,
        pack: FlowPack | None = None,
    ) -> None:
        pack = pack or default_pack()
        if pack.canary is None:
            raise BadInput(f"flow pack {pack.name} declares no canary (canary: write and "
                           "read_back)")
        self._spec = pack.canary
        self._vars = {**pack.vars, "run_id": run_id}
        self._client = _client(entry_url, ca_file, request_timeout_s, pack, token)
        self.run_id = run_id
        self.rate_per_s = rate_per_s
        self._lock = threading.Lock()
        self._acked: list[CanaryAck] = []
        self._failures = 0
        self._rejected = 0
        # (sent, failed) of the first failed attempts: where the outage showed through the
        # entry point, to check the fault step's own time against (issue 19). Bounded.
        self._failed_at: list[tuple[datetime, datetime]] = []
        self._seq = 1
        self._thread: _Paced | None = None

    @property
    def acked(self) -> list[CanaryAck]:
        with self._lock:
            return list(self._acked)

    @property
    def failures(self) -> int:
        with self._lock:
            return self._failures

    @property
    def rejected(self) -> int:
        """4xx answers (included in `failures`)."""
        with self._lock:
            return self._rejected

    def first_failure(self, after: datetime) -> tuple[datetime, datetime] | None:
        """(sent, failed) of the first failed attempt sent at or after `after`, if any."""
        with self._lock:
            return next((f for f in self._failed_at if f[0] >= after), None)

    def _failed(self, sent: datetime) -> None:
        with self._lock:
            self._failures += 1
            if len(self._failed_at) < 10_000:
                self._failed_at.append((sent, _now()))

    def start(self) -> Canary:
        if self._thread is not None:
            raise RuntimeError("the canary was already started")
        canary = self

        class _Thread(_Paced):
            def tick(self) -> None:
                canary._write_one()

        self._thread = _Thread(self.rate_per_s, f"canary-{self.run_id}")
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._thread is not None:
            self._thread.halt(timeout_s)

    def __enter__(self) -> Canary:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _write_one(self) -> None:
        seq = self._seq
        reference = canary_reference(self.run_id, seq)
        w = self._spec.write
        env = {**self._vars, "reference": reference, "seq": seq}
        sent = _now()
        try:
            resp = self._client.request(
                w.method, _subst(w.path, env, in_path=True), _subst(w.body, env),
                headers={str(k): str(v) for k, v in _subst(dict(w.headers), env).items()},
            )
        except (OSError, http.client.HTTPException, FlowError):
            self._failed(sent)
            return
        acked_at = _now()
        # The acknowledgement: an expected status and the payment's id where the pack says.
        pid = _field(resp.body, next(iter(w.capture.values()), "id"))
        if resp.status in w.status and isinstance(pid, str | int) and not isinstance(pid, bool):
            with self._lock:
                self._acked.append(CanaryAck(seq, str(pid), reference, acked_at))
            self._seq += 1
            return
        self._failed(sent)
        with self._lock:
            if 400 <= resp.status < 500 and resp.status not in (408, 409, 429):
                self._rejected += 1
                self._seq += 1


@dataclass(frozen=True)
class Reconciliation:
    """What survived, measured from data through the entry point.

    - `acked_digest` / `present_digest`: SHA-256 (hex) of the sorted references joined by "\\n"
      (UTF-8, no trailing newline) of, respectively, the acknowledged canary payments and the
      payments present with the prefix `canary:{run_id}:` up to the newest acknowledged
      sequence number (`present_count` counts those). Later ones were still in flight when the
      acknowledgements were read. Anyone holding the two lists can recompute them; with
      nothing lost the two digests are equal.
    - `missing`: acknowledged references that are not present (sorted); `lost_count` = their
      number. `unacked_present` counts present references never acknowledged (a write still in
      flight, or whose answer was lost in the outage): not a loss.
    - `rpo_s`: 0 when nothing was lost. Otherwise the ack time of the newest lost payment minus
      the ack time of the newest *present* payment acknowledged before it: the span of
      acknowledged writes that vanished. When no present payment was acknowledged before it,
      the oldest acknowledgement of the run is used instead (everything from the start of the
      run was lost, so the window is at least that long).
    - `lost_after_fault`: lost payments acknowledged after `fault_at`; non-zero means writes
      were lost after the failover itself (split brain, a bad failback), not by replication lag.
    """

    run_id: str
    fault_at: datetime
    acked_count: int
    present_count: int
    acked_digest: str
    present_digest: str
    missing: tuple[str, ...]
    lost_count: int
    lost_after_fault: int
    unacked_present: int
    rpo_s: float
    newest_lost_acked_at: datetime | None
    last_durable_acked_at: datetime | None
    ledger_balanced: bool | None
    ledger_debits_cents: int
    ledger_credits_cents: int
    ledger_entries: int

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "fault_at": _iso(self.fault_at),
            "acked_count": self.acked_count,
            "present_count": self.present_count,
            "acked_digest": self.acked_digest,
            "present_digest": self.present_digest,
            "missing": list(self.missing),
            "lost_count": self.lost_count,
            "lost_after_fault": self.lost_after_fault,
            "unacked_present": self.unacked_present,
            "rpo_s": self.rpo_s,
            "newest_lost_acked_at": _iso(self.newest_lost_acked_at)
            if self.newest_lost_acked_at
            else None,
            "last_durable_acked_at": _iso(self.last_durable_acked_at)
            if self.last_durable_acked_at
            else None,
            "ledger": {
                "balanced": self.ledger_balanced,
                "debits_cents": self.ledger_debits_cents,
                "credits_cents": self.ledger_credits_cents,
                "entries": self.ledger_entries,
            },
        }


def _canary_seq(reference: str) -> int | None:
    """The sequence number at the end of `canary:{run_id}:{seq:08d}`."""
    try:
        return int(reference.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


def references_digest(references: Sequence[str]) -> str:
    """SHA-256 hex of the sorted references joined by "\\n" (UTF-8, no trailing newline)."""
    return hashlib.sha256("\n".join(sorted(references)).encode("utf-8")).hexdigest()


def _get_with_retries(client: Client, path: str, timeout_s: float, method: str = "GET",
                      attempts: int = 3) -> Any:
    last: FlowError | None = None
    for i in range(attempts):
        try:
            return client.call(method, path, timeout_s=timeout_s).body
        except FlowError as e:
            last = e
            time.sleep(0.2 * (i + 1))
    raise RunFailed(f"reconcile through {client.entry_url}: {last}")


def reconcile(
    entry_url: str,
    ca_file: str | None,
    run_id: str,
    acked: Sequence[CanaryAck],
    fault_at: datetime,
    *,
    request_timeout_s: float = 10.0,
    token: str | None = None,
    pack: FlowPack | None = None,
) -> Reconciliation:
    """Compare the acknowledged canary payments with those present behind `entry_url` now
    (the pack's read-back endpoint), and check the ledger (its ledger endpoint). See
    `Reconciliation` for the definitions (digests, RPO window). Raises RunFailed when the entry
    point cannot answer."""
    pack = pack or default_pack()
    spec = pack.canary
    if spec is None:
        raise BadInput(f"flow pack {pack.name} declares no canary to reconcile")
    client = _client(entry_url, ca_file, request_timeout_s, pack, token)
    prefix = f"canary:{run_id}:"
    env = {**pack.vars, "run_id": run_id, "prefix": prefix}
    rb = spec.read_back
    answer = _get_with_retries(client, _subst(rb.path, env, in_path=True), request_timeout_s,
                               rb.method)
    listing = _field(answer, spec.items)
    if not isinstance(listing, list):
        raise RunFailed(f"reconcile: {rb.method} {rb.path.split('?')[0]} returned no list at "
                        f"{spec.items or 'the top'}")
    present = {str(ref) for item in listing
               if (ref := _field(item, spec.reference)) is not _MISSING and ref is not None}
    ledger: dict[str, Any] | None = None
    if spec.ledger is not None:
        got = _get_with_retries(client, _subst(spec.ledger.path, env, in_path=True),
                                request_timeout_s, spec.ledger.method)
        if not isinstance(got, dict):
            raise RunFailed(f"reconcile: {spec.ledger.path} did not return an object")
        ledger = {k: _field(got, path) for k, path in spec.ledger_fields.items()}

    by_time = sorted(acked, key=lambda a: a.acked_at)
    acked_refs = {a.reference for a in by_time}
    # The canary keeps writing while this runs: a payment it wrote after the snapshot of its
    # acknowledgements may already be present. Sequence numbers are acknowledged in order,
    # without gaps, so compare only the present payments up to the newest acknowledged one;
    # the others are in flight (counted in unacked_present), neither lost nor compared.
    newest_seq = max((a.seq for a in by_time), default=-1)
    in_scope = {r for r in present if (seq := _canary_seq(r)) is not None and seq <= newest_seq}
    lost = [a for a in by_time if a.reference not in present]
    rpo_s = 0.0
    newest_lost_at: datetime | None = None
    durable_at: datetime | None = None
    if lost:
        newest_lost_at = lost[-1].acked_at
        before = [a for a in by_time if a.acked_at <= newest_lost_at and a.reference in present]
        durable_at = before[-1].acked_at if before else by_time[0].acked_at
        rpo_s = (newest_lost_at - durable_at).total_seconds()
    elif by_time:
        durable_at = by_time[-1].acked_at

    return Reconciliation(
        run_id=run_id,
        fault_at=fault_at,
        acked_count=len(acked),
        present_count=len(in_scope),
        acked_digest=references_digest(list(acked_refs)),
        present_digest=references_digest(list(in_scope)),
        missing=tuple(sorted(a.reference for a in lost)),
        lost_count=len(lost),
        lost_after_fault=sum(1 for a in lost if a.acked_at > fault_at),
        unacked_present=len(present - acked_refs),
        rpo_s=rpo_s,
        newest_lost_acked_at=newest_lost_at,
        last_durable_acked_at=durable_at,
        # No ledger endpoint declared: the balance is not read (None), and the verdict says so.
        ledger_balanced=(ledger.get("balanced") is True) if ledger is not None else None,
        ledger_debits_cents=_int(ledger, "debits_cents"),
        ledger_credits_cents=_int(ledger, "credits_cents"),
        ledger_entries=_int(ledger, "entries"),
    )


def _int(d: Mapping[str, Any] | None, key: str) -> int:
    v = d.get(key) if d else None
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


# --------------------------------------------------------------------------------------------
# load


@dataclass(frozen=True)
class LoadStats:
    ok: int
    failed: int
    errors: tuple[tuple[str, int], ...]  # (error detail, count), most frequent first
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "failed": self.failed,
            "errors": [{"error": e, "count": n} for e, n in self.errors],
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
        }


class LoadMode(StrEnum):
    WRITE = "write"  # POST /payments (authorize), the path a patch must not break
    READ = "read"  # GET /healthz


@dataclass
class _LoadState:
    ok: int = 0
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)


class LoadGenerator:
    """Steady traffic through the entry point, counting ok and failed requests ("zero failed
    requests" during a rolling patch). A request fails on a transport error or any status other
    than 2xx; with `workers` threads each pacing at rate_per_s / workers, one slow request does
    not stall the whole stream."""

    def __init__(
        self,
        entry_url: str,
        ca_file: str | None,
        rate_per_s: float = 50,
        *,
        mode: LoadMode | str = LoadMode.WRITE,
        workers: int = 2,
        run_id: str | None = None,
        request_timeout_s: float = 2.0,
        token: str | None = None,
    ) -> None:
        if workers < 1:
            raise BadInput(f"workers must be >= 1, not {workers}")
        if rate_per_s <= 0:
            raise BadInput(f"rate_per_s must be > 0, not {rate_per_s}")
        try:
            self.mode = LoadMode(mode)
        except ValueError:
            raise BadInput(f"unknown load mode {mode!r} (use write or read)") from None
        self._client = Client(entry_url, ca_file, request_timeout_s, token)
        self.rate_per_s = rate_per_s
        self.workers = workers
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self._state = _LoadState()
        self._lock = threading.Lock()
        self._seq = 0
        self._threads: list[_Paced] = []

    @property
    def ok(self) -> int:
        with self._lock:
            return self._state.ok

    @property
    def failed(self) -> int:
        with self._lock:
            return self._state.failed

    def stats(self) -> LoadStats:
        with self._lock:
            lat = sorted(self._state.latencies_ms)
            errors = tuple(self._state.errors.most_common())
            ok, failed = self._state.ok, self._state.failed

        def pct(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 3) if lat else None

        return LoadStats(
            ok, failed, errors, pct(0.50), pct(0.99), round(lat[-1], 3) if lat else None
        )

    def start(self) -> LoadGenerator:
        if self._threads:
            raise RuntimeError("the load generator was already started")
        gen = self

        class _Thread(_Paced):
            def tick(self) -> None:
                gen._one()

        self._threads = [
            _Thread(self.rate_per_s / self.workers, f"load-{self.run_id}-{i}")
            for i in range(self.workers)
        ]
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> LoadStats:
        for t in self._threads:
            t._stop_event.set()
        for t in self._threads:
            t.halt(timeout_s)
        return self.stats()

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _one(self) -> None:
        with self._lock:
            self._seq += 1
            seq = self._seq
        started = time.monotonic()
        error: str | None = None
        try:
            if self.mode is LoadMode.WRITE:
                resp = self._client.request(
                    "POST",
                    "/payments",
                    {
                        "amount_cents": 1,
                        "currency": "EUR",
                        "from_account": f"load-{self.run_id}-payer",
                        "to_account": f"load-{self.run_id}-payee",
                        "reference": f"load:{self.run_id}:{seq:08d}",
                    },
                    headers={"Idempotency-Key": f"load:{self.run_id}:{seq}"},
                )
            else:
                resp = self._client.request("GET", "/healthz")
            if not 200 <= resp.status < 300:
                error = f"HTTP {resp.status} {_error_text(resp.body)}".rstrip()
        except TimeoutError:
            error = "timed out"
        except (OSError, http.client.HTTPException) as e:
            error = _transport_error(e)
        elapsed_ms = (time.monotonic() - started) * 1000
        with self._lock:
            if error is None:
                self._state.ok += 1
                self._state.latencies_ms.append(elapsed_ms)
            else:
                self._state.failed += 1
                self._state.errors[error] += 1


# --------------------------------------------------------------------------------------------
# CLI: python -m drkit.flows smoke --entry URL [--ca FILE] [--pack FILE] [--var K=V]
#      [--flows a,b] [--until-green --timeout 60] [--json]


class _ArgError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # never let argparse exit from under main()
        raise _ArgError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m drkit.flows", description="payments smoke flows")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    s = sub.add_parser("smoke", help="run the smoke flows through the entry point")
    s.add_argument("--entry", required=True, help="entry URL, e.g. https://127.0.0.1:17443")
    s.add_argument("--ca", help="CA file to verify the entry point's certificate against")
    s.add_argument("--token-file", help="file holding the API's bearer token (the lab's: "
                   "secrets/api.token under its state directory)")
    s.add_argument("--pack", help="flow pack file (default: the lab's flows/payments-lab.yml)")
    s.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                   help="a value for the pack's ${NAME} (test merchant or account ids)")
    s.add_argument("--flows", help="comma-separated flow names (default: all of the pack's)")
    s.add_argument("--until-green", action="store_true", help="retry until all flows pass")
    s.add_argument("--timeout", type=float, default=60.0, help="seconds, with --until-green")
    s.add_argument("--interval", type=float, default=0.05, help="seconds between rounds")
    s.add_argument("--request-timeout", type=float, default=DEFAULT_REQUEST_TIMEOUT_S)
    s.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    return p


def read_token(path: str | Path) -> str:
    """A bearer token from a file (one line): a regular file, bounded, that only its owner can
    read. Raises BadInput naming the file, never the token."""
    from drkit.lab.security import read_api_token

    return read_api_token(Path(path))


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 when every flow passed, 1 otherwise, 2 on bad arguments, 3 if interrupted."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in args_list
    try:
        try:
            args = _parser().parse_args(args_list)
            if args.timeout <= 0 or args.interval < 0 or args.request_timeout <= 0:
                raise _ArgError("--timeout and --request-timeout must be > 0, --interval >= 0")
            extra = dict(v.split("=", 1) for v in args.var if "=" in v)
            if len(extra) != len(args.var):
                raise _ArgError("--var takes NAME=VALUE")
            pack = load_pack(args.pack, extra) if args.pack else (
                replace(default_pack(), vars={**default_pack().vars, **extra}) if extra
                else None)
            names = args.flows or ",".join((pack or default_pack()).flows)
            flows = [f.strip() for f in names.split(",") if f.strip()]
            token = read_token(args.token_file) if args.token_file else None
            started_at = _now()
            if args.until_green:
                outcome = smoke_until_green(
                    args.entry,
                    args.ca,
                    flows,
                    args.timeout,
                    args.interval,
                    request_timeout_s=args.request_timeout,
                    token=token,
                    pack=pack,
                )
            else:
                results = run_smoke(
                    args.entry, args.ca, flows, request_timeout_s=args.request_timeout,
                    token=token, pack=pack,
                )
                green = all(r.passed for r in results)
                outcome = SmokeOutcome(started_at, _now() if green else None, 1, tuple(results))
        except (_ArgError, BadInput) as e:
            _emit_error(str(e), as_json)
            return 2
    except KeyboardInterrupt:
        _emit_error("interrupted", as_json)
        return 3
    data = {"entry": args.entry, **outcome.to_json()}
    if as_json:
        sys.stdout.write(json.dumps(data) + "\n")
    else:
        for r in outcome.results:
            sys.stdout.write(
                f"{r.status:4}  {r.flow:18} {r.duration_s * 1000:8.1f} ms  {r.detail}\n"
            )
        verdict = f"green at {data['green_at']}" if outcome.green else "NOT green"
        sys.stdout.write(f"{verdict} after {outcome.attempts} attempt(s)\n")
    return 0 if outcome.green else 1


def _emit_error(message: str, as_json: bool) -> None:
    sys.stderr.write(f"drkit.flows: {message}\n")
    if as_json:
        sys.stdout.write(json.dumps({"error": message}) + "\n")


if __name__ == "__main__":
    sys.exit(main())
