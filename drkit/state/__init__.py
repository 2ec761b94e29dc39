"""Shared run state (issue 18): the drill lease, the progress journal and the result of each
run, in a backend every controller reaches (S3 with conditional writes), in a region other than
the ones a drill fails over.

    state = open_state(plan, "prod")                 # None: the environment has no shared state
    with state.acquire("prod", "drill run region-failover", run_id=rid, ttl=300) as lease:
        lease.append("phase", {"name": "preflight", "status": "ok"})   # fenced
        lease.finish({"verdict": "pass", "exit_code": 0})              # fenced

Layout under s3://bucket/prefix:

    envs/<env>/lease.json               who holds the environment: holder, expiry, fencing token
    runs/<run>/meta.json                what the run is (environment, command, token, node)
    runs/<run>/journal/<seq>.json       progress entries, each carrying the writer's token
    runs/<run>/result.json              the verdict, written once

The lease is one object replaced only with `If-Match: <its ETag>`: whoever replaces it has seen
the latest version. A new holder takes it (a free or expired lease) by writing the next token;
every later write of a holder (renewal, journal entry, result) first replaces the lease with its
own token and a fresh expiry (`If-Match` again), so a holder that lost the lease (it expired and
another took it) is refused before it writes anything: `LeaseLost`, naming the new holder. Two
controllers racing for a free lease both write with the same ETag: S3 accepts one, the other
gets `LeaseHeld` naming the winner. Readers also drop journal entries whose token is older than
one already seen in the run (a write that slipped through a paused process).

Expiry is wall-clock time written by the holder and read by the others: controllers' clocks
must agree to well within the lease (NTP); the lease's length is the plan's `state.lease`.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from drkit.envlock import EnvironmentBusy, Holder
from drkit.errors import EnvironmentProblem
from drkit.state.s3 import Conflict, S3Blobs

if TYPE_CHECKING:
    from drkit.config import Plan


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).replace(microsecond=0).isoformat().replace(
        "+00:00", "Z")


@dataclass(frozen=True)
class LeaseRecord:
    """The lease of one environment as stored: who holds it, until when, with which token."""

    environment: str
    token: int
    command: str
    run_id: str | None
    operator: str
    host: str
    pid: int
    acquired_at: float
    expires_at: float
    released: bool = False
    node: str | None = None  # where the run's driver runs, when not on the controller

    def live(self, now: float) -> bool:
        return not self.released and self.expires_at > now

    def describe(self) -> str:
        run = f" (run {self.run_id})" if self.run_id else ""
        where = f", driver on node {self.node}" if self.node else ""
        return (f"`drkit {self.command}`{run} by {self.operator}, pid {self.pid} on "
                f"{self.host}{where}, fencing token {self.token}, lease until "
                f"{_iso(self.expires_at)}")

    def holder(self) -> Holder:
        return Holder(self.command, self.environment, self.run_id, self.operator, self.pid,
                      self.host, _iso(self.acquired_at))

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def parse(cls, data: bytes) -> LeaseRecord:
        raw = json.loads(data)
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})


@dataclass(frozen=True)
class JournalEntry:
    seq: int
    token: int
    at: float
    kind: str  # started, phase, note, verdict ...
    data: dict[str, Any] = field(default_factory=dict)


class LeaseHeld(EnvironmentBusy):
    """Another controller holds the environment's lease: refused, nothing changed (exit 2)."""

    def __init__(self, message: str, record: LeaseRecord) -> None:
        super().__init__(message, record.holder())
        self.record = record


class LeaseLost(EnvironmentProblem):
    """This holder's lease expired and another took it: it may not write any more (exit 3)."""


class SharedState:
    """The shared state of one plan: leases per environment, journals and results per run."""

    def __init__(self, blobs: S3Blobs, *, clock: Callable[[], float] = time.time) -> None:
        self.blobs = blobs
        self.clock = clock

    @property
    def url(self) -> str:
        return self.blobs.url

    # ------------------------------------------------------------------ the lease

    def lease(self, environment: str) -> LeaseRecord | None:
        got = self._read_lease(environment)
        return got[0] if got else None

    def _read_lease(self, environment: str) -> tuple[LeaseRecord, str] | None:
        got = self.blobs.get(f"envs/{environment}/lease.json")
        if got is None:
            return None
        try:
            return LeaseRecord.parse(got[0]), got[1]
        except (ValueError, TypeError, KeyError) as e:
            raise EnvironmentProblem(
                f"shared state {self.url}: envs/{environment}/lease.json is not a lease "
                f"record ({e}); a person must inspect it (it is never overwritten blindly)"
            ) from e

    def acquire(self, environment: str, command: str, *, run_id: str | None, ttl: float,
                operator: str | None = None, node: str | None = None) -> HeldLease:
        """Take the environment's lease now or raise LeaseHeld naming its live holder."""
        now = self.clock()
        current = self._read_lease(environment)
        if current is not None and current[0].live(now):
            raise _held(environment, current[0])
        token = (current[0].token if current else 0) + 1
        from drkit.envlock import _operator

        record = LeaseRecord(environment=environment, token=token, command=command,
                             run_id=run_id, operator=operator or _operator(),
                             host=socket.gethostname(), pid=os.getpid(), acquired_at=now,
                             expires_at=now + ttl, node=node)
        key = f"envs/{environment}/lease.json"
        try:
            etag = (self.blobs.create(key, record.to_bytes()) if current is None else
                    self.blobs.replace(key, record.to_bytes(), current[1]))
        except Conflict:
            winner = self.lease(environment)
            if winner is None:  # pragma: no cover - a lease is never deleted
                raise EnvironmentProblem(f"shared state {self.url}: {key} vanished") from None
            raise _held(environment, winner) from None
        held = HeldLease(self, record, etag, ttl,
                         took_over=current[0] if current and not current[0].released else None)
        if run_id:
            meta = {"environment": environment, "command": command, "token": token,
                    "operator": record.operator, "host": record.host, "node": node,
                    "started_at": now}
            try:
                self.blobs.create(f"runs/{run_id}/meta.json", json.dumps(meta).encode())
            except Conflict:
                pass  # a resumed run keeps its first meta; its journal continues
            held.seq = len(self.blobs.list(f"runs/{run_id}/journal/"))
        return held

    def running(self) -> list[LeaseRecord]:
        """The live leases: what runs now, per environment."""
        now = self.clock()
        out = []
        for key in self.blobs.list("envs/"):
            if key.endswith("/lease.json"):
                rec = self.lease(key.split("/")[1])
                if rec is not None and rec.live(now):
                    out.append(rec)
        return out

    def leases(self) -> list[LeaseRecord]:
        out = []
        for key in self.blobs.list("envs/"):
            if key.endswith("/lease.json"):
                rec = self.lease(key.split("/")[1])
                if rec is not None:
                    out.append(rec)
        return out

    # ------------------------------------------------------------------ runs

    def meta(self, run_id: str) -> dict[str, Any] | None:
        got = self.blobs.get(f"runs/{run_id}/meta.json")
        return json.loads(got[0]) if got else None

    def journal(self, run_id: str, after: int = 0) -> list[JournalEntry]:
        """The run's entries with seq > after, in order; entries written with a token older
        than one already seen in the run are dropped (a fenced-out writer's)."""
        out: list[JournalEntry] = []
        newest = 0
        for key in self.blobs.list(f"runs/{run_id}/journal/"):
            got = self.blobs.get(key)
            if got is None:
                continue
            try:
                e = JournalEntry(**json.loads(got[0]))
            except (ValueError, TypeError):
                continue
            if e.token < newest:
                continue
            newest = e.token
            if e.seq > after:
                out.append(e)
        return out

    def result(self, run_id: str) -> dict[str, Any] | None:
        got = self.blobs.get(f"runs/{run_id}/result.json")
        return json.loads(got[0]) if got else None

    def artifacts(self, run_id: str) -> list[str]:
        """Names of the run's artifacts kept in the shared state (relative to its folder)."""
        base = f"runs/{run_id}/artifacts/"
        return [k[len(base):] for k in self.blobs.list(base)]

    def artifact(self, run_id: str, name: str) -> bytes | None:
        got = self.blobs.get(f"runs/{run_id}/artifacts/{name}")
        return got[0] if got else None


class HeldLease:
    """A lease this process holds. Every write is fenced by a conditional replace of the lease."""

    def __init__(self, state: SharedState, record: LeaseRecord, etag: str, ttl: float,
                 took_over: LeaseRecord | None = None) -> None:
        self.state = state
        self.record = record
        self.etag = etag
        self.ttl = ttl
        self.took_over = took_over
        self.seq = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self.lost: LeaseLost | None = None
        self._on_lost: list[Callable[[LeaseLost], None]] = []

    def on_lost(self, callback: Callable[[LeaseLost], None]) -> None:
        """Call `callback` once, from whichever thread finds out, when this holder loses the
        lease: a driver must stop acting then (its phases, not only its writes)."""
        self._on_lost.append(callback)
        if self.lost is not None:
            callback(self.lost)

    def _lose(self, lost: LeaseLost) -> LeaseLost:
        first = self.lost is None
        self.lost = lost
        if first:
            for callback in self._on_lost:
                try:
                    callback(lost)
                except Exception:  # noqa: BLE001 - one listener must not hide the loss
                    pass
        return lost

    @property
    def token(self) -> int:
        return self.record.token

    def _fence(self, *, released: bool = False) -> None:
        """Replace the lease with our token and a fresh expiry, if nobody changed it; else
        LeaseLost (and nothing is written)."""
        if self.lost is not None:
            raise self.lost
        new = replace(self.record, expires_at=self.state.clock() + self.ttl, released=released)
        key = f"envs/{self.record.environment}/lease.json"
        try:
            self.etag = self.state.blobs.replace(key, new.to_bytes(), self.etag)
            self.record = new
        except Conflict:
            now_held = self.state.lease(self.record.environment)
            who = now_held.describe() if now_held else "nobody"
            raise self._lose(LeaseLost(
                f"the lease of environment {self.record.environment!r} (fencing token "
                f"{self.record.token}) was lost: it is now held by {who}; this controller "
                "writes nothing more (its lease expired before it renewed it)")) from None

    def renew(self) -> None:
        with self._lock:
            self._fence()

    def check(self) -> None:
        """Prove this holder still holds the lease, now: a fenced renewal. LeaseLost when the
        lease was taken over, or when the backend cannot be reached and the lease ran out
        meanwhile (nobody can say it is still ours); a backend that hiccups while the lease
        still has time left is not a loss (nobody can take a live lease)."""
        with self._lock:
            try:
                self._fence()
            except EnvironmentProblem as e:
                if isinstance(e, LeaseLost):
                    raise
                self._expire_if_due(e)

    def _expire_if_due(self, why: EnvironmentProblem) -> None:
        # A margin for clocks and the time the failed request took.
        if self.state.clock() >= self.record.expires_at - min(5.0, self.ttl / 10):
            raise self._lose(LeaseLost(
                f"the lease of environment {self.record.environment!r} (fencing token "
                f"{self.record.token}) ran out: it could not be renewed ({why}); another "
                "controller may hold it now, so this one acts no more")) from None

    def append(self, kind: str, data: dict[str, Any] | None = None) -> int:
        """Add a journal entry (fenced); its sequence number."""
        run = self.record.run_id
        if not run:
            raise EnvironmentProblem("a lease without a run id has no journal")
        with self._lock:
            self._fence()
            self.seq += 1
            entry = JournalEntry(self.seq, self.token, self.state.clock(), kind, data or {})
            try:
                self.state.blobs.create(f"runs/{run}/journal/{self.seq:08d}.json",
                                        json.dumps(asdict(entry), default=str).encode())
            except Conflict:
                raise LeaseLost(f"journal entry {self.seq} of run {run} exists already: "
                                "another writer holds this run") from None
            return self.seq

    def finish(self, result: dict[str, Any]) -> None:
        """Write the run's result once (fenced)."""
        run = self.record.run_id
        with self._lock:
            self._fence()
            try:
                self.state.blobs.create(f"runs/{run}/result.json",
                                        json.dumps({**result, "token": self.token,
                                                    "at": self.state.clock()},
                                                   default=str).encode())
            except Conflict:
                raise LeaseLost(f"run {run} has a result already") from None

    def put_artifact(self, name: str, data: bytes) -> None:
        """Keep one of the run's artifacts (fenced; written once)."""
        run = self.record.run_id
        with self._lock:
            self._fence()
            try:
                self.state.blobs.create(f"runs/{run}/artifacts/{name}", data)
            except Conflict:
                raise LeaseLost(f"artifact {name} of run {run} exists already") from None

    def release(self) -> None:
        self.stop_renewing()
        with self._lock:
            if self.lost is None:
                self._fence(released=True)

    def start_renewing(self, every: float | None = None) -> None:
        """Renew in the background (every third of the lease) while the run lasts."""
        interval = every or max(self.ttl / 3, 0.2)

        def loop() -> None:
            wait = interval
            while not self._stop.wait(wait):
                etag = self.etag
                try:
                    self.check()
                except LeaseLost:
                    return  # (its on_lost callbacks were told)
                # A renewal the backend refused: try again soon, so the loss (if the lease runs
                # out meanwhile) is found before another controller can take the lease.
                wait = interval if self.etag != etag else min(interval, 1.0)

        self._renewer = threading.Thread(target=loop, name="drkit-lease", daemon=True)
        self._renewer.start()

    def stop_renewing(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(5)

    def __enter__(self) -> HeldLease:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.release()
        except LeaseLost:
            pass


def _held(environment: str, rec: LeaseRecord) -> LeaseHeld:
    return LeaseHeld(f"another controller holds environment {environment!r}: "
                     f"{rec.describe()}; nothing was changed: wait for it to finish "
                     "(drkit drill status / attach), then run this again", rec)


def parse_s3_url(url: str) -> tuple[str, str]:
    if not url.startswith("s3://") or not url[5:].split("/", 1)[0]:
        raise ValueError(f"{url!r} is not an S3 location (use s3://bucket/prefix)")
    bucket, _, prefix = url[5:].partition("/")
    return bucket, prefix.strip("/")


def open_state(plan: Plan, environment: str, *,
               clock: Callable[[], float] = time.time) -> SharedState | None:
    """The environment's shared state from the plan, or None when it has none (local lock)."""
    cfg = plan.environment(environment).state
    if cfg is None:
        return None
    return state_from(cfg.s3, region=cfg.region, endpoint_url=cfg.endpoint_url, clock=clock)


def state_from(url: str, *, region: str | None = None, endpoint_url: str | None = None,
               clock: Callable[[], float] = time.time) -> SharedState:
    bucket, prefix = parse_s3_url(url)
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
    return SharedState(S3Blobs(bucket, prefix, region=region, endpoint_url=endpoint),
                       clock=clock)


@contextmanager
def holding(state: SharedState, environment: str, command: str, *, run_id: str | None,
            ttl: float, node: str | None = None) -> Iterator[HeldLease]:
    """acquire + renew in the background + release at the end."""
    lease = state.acquire(environment, command, run_id=run_id, ttl=ttl, node=node)
    lease.start_renewing()
    with lease:
        yield lease


__all__ = ["Conflict", "HeldLease", "JournalEntry", "LeaseHeld", "LeaseLost", "LeaseRecord",
           "S3Blobs", "SharedState", "holding", "open_state", "parse_s3_url", "state_from"]
