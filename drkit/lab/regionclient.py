"""A client inside the primary region (issue 17), and the per-client reconciliation.

A partition cuts a region off from the outside, not from itself: clients inside the region keep
writing to its database. The partition scenario runs this client inside the primary region's
network namespace, next to the payments API it writes to (the drill's own canary writes through
the public entry point):

    python -m drkit.lab.regionclient run --api http://127.0.0.1:PORT --token-file F
        --run-id RUN --out ACKS.json [--rate 10] [--timeout 30]

It writes numbered payments (reference `canary:RUN:{seq:08d}`, the same shape as
drkit.flows.Canary, with the same Idempotency-Key retries) and rewrites ACKS.json atomically
with every acknowledgement it received, twice a second and when it is stopped (SIGTERM).

    python -m drkit.lab.regionclient reconcile --acks ACKS.json --entry URL --ca-file CA
        --token-file F --run-id RUN --partitioned-at FILE [--fenced-at FILE]

reads them back after failback and prints one JSON object: what the client had acknowledged,
what is present through the entry point now: acknowledged payments that are missing;
references present twice; payments present now that the promoted primary did not hold when
the region was reconnected (`snapshot`, taken by the heal phase) and created before that: the
isolated old primary wrote them and they survived, a second timeline (split-brain; a fenced
primary's are thrown away when it is rebuilt); acknowledgements between the
fence and the heal (which must never happen); and the ledger's balance. The client runs until
after failback (a write an unfenced old primary holds back while its synchronous standby is gone
completes when failback reattaches one). Exit 0 when nothing is wrong, 1 otherwise.

    python -m drkit.lab.regionclient probe --url https://EDGE:PORT/PATH --ca-file CA
        --server-name HOST --token-file F --out PROBE.json

is an independent prober (run inside the edge namespace by tests/netns): it counts the entry
point's answers until SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from drkit.files import atomic_write


@dataclass(frozen=True)
class ClientFigures:
    """Reconciliation of one client's acknowledged payments (see the module docstring)."""

    client: str
    acknowledged: int
    present: int
    missing: tuple[str, ...]
    duplicated: tuple[str, ...]
    # Present now, but written by the isolated old primary: absent from the promoted primary
    # when the region was reconnected, created before that: a second timeline that survived.
    diverged: tuple[str, ...]
    acked_after_fence: tuple[str, ...]  # acknowledged between the fence and the heal
    ledger_balanced: bool
    failed_attempts: int

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.diverged or
                    self.acked_after_fence) and self.ledger_balanced

    def to_json(self) -> dict[str, Any]:
        return {
            "client": self.client, "ok": self.ok, "acknowledged": self.acknowledged,
            "present": self.present, "missing": list(self.missing),
            "duplicated": list(self.duplicated),
            "diverged": list(self.diverged),
            "acked_after_fence": list(self.acked_after_fence),
            "ledger_balanced": self.ledger_balanced,
            "failed_attempts": self.failed_attempts,
        }


def _write_json(path: Path, data: Any) -> None:
    atomic_write(path, json.dumps(data).encode("utf-8"), mode=0o600)


def run(api: str, token: str, run_id: str, out: Path, rate: float, timeout: float) -> int:
    from drkit import flows

    canary = flows.Canary(api, None, run_id, rate_per_s=rate, request_timeout_s=timeout,
                          token=token)
    done = threading.Event()

    def dump() -> None:
        _write_json(out, {
            "run_id": run_id, "api": api, "failed_attempts": canary.failures,
            "acked": [{"seq": a.seq, "payment_id": a.payment_id, "reference": a.reference,
                       "acked_at": a.acked_at.isoformat()} for a in canary.acked]})

    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    canary.start()
    dump()
    while not done.wait(0.5):
        dump()
    # A request in flight ends within its timeout; what it acknowledged is kept.
    canary.stop(timeout_s=timeout + 1)
    dump()
    return 0


def probe(url: str, ca_file: str, server_name: str, token: str, out: Path,
          interval: float, timeout: float) -> int:
    """GET url (the entry point) every `interval` s until SIGTERM, counting answers: a 200 is ok,
    anything else (a status, a reset, a timeout) failed. Rewrites OUT twice a second and when
    stopped: {"ok", "failed", "first_errors", "started_at", "stopped_at"}. Started inside the
    lab's edge namespace (`ip netns exec <edge> python -m drkit.lab.regionclient probe ...`), it
    sees the entry point as a client on the lab's network does, independent of drkit."""
    import http.client
    import socket
    import ssl
    import time
    from datetime import UTC
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    ctx = ssl.create_default_context(cafile=ca_file)
    seen: dict[str, Any] = {"url": url, "ok": 0, "failed": 0, "first_errors": [],
                            "started_at": datetime.now(UTC).isoformat(), "stopped_at": None}
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    last = 0.0
    while not done.is_set():
        error = None
        try:
            raw = socket.create_connection((parts.hostname, parts.port or 443), timeout=timeout)
            conn = http.client.HTTPSConnection(parts.hostname or "", parts.port or 443,
                                               timeout=timeout, context=ctx)
            # The certificate names the lab's hostname, not the edge address: verify that name.
            conn.sock = ctx.wrap_socket(raw, server_hostname=server_name)
            try:
                conn.request("GET", target, headers={
                    "Authorization": f"Bearer {token}", "Connection": "close"})
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    error = f"HTTP {resp.status}"
            finally:
                conn.close()
        except (OSError, http.client.HTTPException) as e:
            error = f"{type(e).__name__}: {e}"
        if error is None:
            seen["ok"] += 1
        else:
            seen["failed"] += 1
            if len(seen["first_errors"]) < 10:
                seen["first_errors"].append(f"{datetime.now(UTC).isoformat()} {error}")
        if time.monotonic() - last > 0.5:
            _write_json(out, seen)
            last = time.monotonic()
        done.wait(interval)
    seen["stopped_at"] = datetime.now(UTC).isoformat()
    _write_json(out, seen)
    return 0


def _when(path: str | None, key: str) -> datetime | None:
    if not path:
        return None
    try:
        value = json.loads(Path(path).read_text())[key]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def reconcile(acks_file: Path, entry: str, ca_file: str | None, token: str | None,
              run_id: str, partitioned_at: datetime, healed_at: datetime | None,
              fenced_at: datetime | None, promoted: set[str] | None,
              client: str = "in-region") -> ClientFigures:
    from urllib.parse import quote

    from drkit import flows

    data = json.loads(acks_file.read_text())
    acked = [flows.CanaryAck(int(a["seq"]), a["payment_id"], a["reference"],
                             datetime.fromisoformat(a["acked_at"])) for a in data["acked"]]
    c = flows.Client(entry, ca_file, 10.0, token)
    prefix = f"canary:{run_id}:"
    listing = c.call("GET", f"/payments?reference_prefix={quote(prefix, safe='')}",
                     timeout_s=10.0).body
    items = [i for i in listing if isinstance(i, dict)] if isinstance(listing, list) else []
    ledger = c.call("GET", "/ledger/verify", timeout_s=10.0).body
    present = {i["reference"] for i in items}
    seen: dict[str, int] = {}
    for i in items:
        seen[i["reference"]] = seen.get(i["reference"], 0) + 1

    def kept_from_isolation(i: dict[str, Any]) -> bool:
        """Written by the isolated old primary and kept: not on the promoted primary when the
        region was reconnected, yet present now, and created before the heal (after it the
        region is whole again and its writes are legitimate)."""
        if promoted is None or i["reference"] in promoted:
            return False
        try:
            created = datetime.fromisoformat(str(i["created_at"]).replace("Z", "+00:00"))
        except (KeyError, ValueError):
            return True
        return healed_at is None or created < healed_at

    def before_heal(at: datetime) -> bool:
        return healed_at is None or at < healed_at

    return ClientFigures(
        client=client,
        acknowledged=len(acked),
        present=sum(1 for a in acked if a.reference in present),
        missing=tuple(sorted(a.reference for a in acked if a.reference not in present)),
        duplicated=tuple(sorted(r for r, n in seen.items() if n > 1)),
        diverged=tuple(sorted(i["reference"] for i in items if kept_from_isolation(i))),
        acked_after_fence=tuple(sorted(
            a.reference for a in acked
            if fenced_at is not None and a.acked_at > fenced_at and before_heal(a.acked_at))),
        ledger_balanced=isinstance(ledger, dict) and ledger.get("balanced") is True,
        failed_attempts=int(data.get("failed_attempts") or 0),
    )


def wait_isolated(acks_file: Path, partitioned_at: datetime, timeout_s: float) -> bool:
    """Whether the client had a payment acknowledged after the partition (by the cut-off
    region's own database), waiting up to `timeout_s` for one."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            acked = json.loads(acks_file.read_text())["acked"]
        except (OSError, ValueError, KeyError, TypeError):
            acked = []
        if any(datetime.fromisoformat(a["acked_at"]) > partitioned_at for a in acked):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def snapshot(port: int, host: str, run_id: str) -> list[str]:
    """References of this client's payments in the database on `port` (through the lab's
    socket folder, as the superuser): what the promoted primary holds before the heal."""
    import psycopg

    with psycopg.connect(host=host, port=port, user="postgres", dbname="payments",
                         autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute("SELECT reference FROM payments WHERE reference LIKE %s",
                            (f"canary:{run_id}:%",)).fetchall()
    return sorted(str(r[0]) for r in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m drkit.lab.regionclient")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="write payments to a region's API until SIGTERM")
    r.add_argument("--api", required=True)
    r.add_argument("--token-file", required=True)
    r.add_argument("--run-id", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--rate", type=float, default=10.0)
    r.add_argument("--timeout", type=float, default=30.0)
    pr = sub.add_parser("probe", help="GET the entry point until SIGTERM, counting failures")
    pr.add_argument("--url", required=True)
    pr.add_argument("--ca-file", required=True)
    pr.add_argument("--server-name", required=True)
    pr.add_argument("--token-file", required=True)
    pr.add_argument("--out", required=True)
    pr.add_argument("--interval", type=float, default=0.05)
    pr.add_argument("--timeout", type=float, default=5.0)
    c = sub.add_parser("reconcile", help="reconcile the client's acknowledgements")
    c.add_argument("--acks", required=True)
    c.add_argument("--entry", required=True)
    c.add_argument("--ca-file")
    c.add_argument("--token-file")
    c.add_argument("--run-id", required=True)
    c.add_argument("--partitioned-at", required=True, help="partition.json (partitioned_at)")
    c.add_argument("--fenced-at", help="fence.json (fenced_at), when the drill fenced")
    c.add_argument("--healed-at", help="heal.json (healed_at)")
    n = sub.add_parser("snapshot", help="record this client's payments on the promoted primary")
    n.add_argument("--port", type=int, required=True)
    n.add_argument("--host", default=os.environ.get("DRKIT_PG_HOST", "127.0.0.1"))
    n.add_argument("--run-id", required=True)
    n.add_argument("--out", required=True)
    c.add_argument("--promoted", help="promoted.json (the snapshot taken before the heal)")
    w = sub.add_parser("wait-isolated", help="wait until a payment was acknowledged after the "
                       "partition (exit 1 if none within --timeout)")
    w.add_argument("--acks", required=True)
    w.add_argument("--partitioned-at", required=True, help="partition.json (partitioned_at)")
    w.add_argument("--timeout", type=float, default=30.0)
    a = ap.parse_args(argv)
    if a.cmd == "wait-isolated":
        since = _when(a.partitioned_at, "partitioned_at")
        return 0 if since is not None and wait_isolated(Path(a.acks), since, a.timeout) else 1
    if a.cmd == "snapshot":
        try:
            refs = snapshot(a.port, a.host, a.run_id)
        except Exception as e:  # noqa: BLE001 - recorded: reconcile then says it is unknown
            _write_json(Path(a.out), {"error": f"{type(e).__name__}: {e}"})
            print(json.dumps({"error": str(e)}))
            return 1
        _write_json(Path(a.out), {"references": refs})
        print(json.dumps({"references": len(refs)}))
        return 0
    if a.cmd == "probe":
        token = Path(a.token_file).read_text().strip()
        return probe(a.url, a.ca_file, a.server_name, token, Path(a.out), a.interval, a.timeout)
    if a.cmd == "run":
        token = Path(a.token_file).read_text().strip()
        return run(a.api, token, a.run_id, Path(a.out), a.rate, a.timeout)
    part = _when(a.partitioned_at, "partitioned_at")
    if part is None:
        print(json.dumps({"error": f"no partition time in {a.partitioned_at}"}))
        return 2
    bearer = Path(a.token_file).read_text().strip() if a.token_file else None
    promoted: set[str] | None = None
    if a.promoted:
        try:
            promoted = set(json.loads(Path(a.promoted).read_text())["references"])
        except (OSError, ValueError, KeyError, TypeError):
            print(json.dumps({"error": f"no snapshot of the promoted primary in {a.promoted}"}))
            return 2
    fig = reconcile(Path(a.acks), a.entry, a.ca_file, bearer, a.run_id, part,
                    _when(a.healed_at, "healed_at"), _when(a.fenced_at, "fenced_at"), promoted)
    print(json.dumps(fig.to_json()))
    return 0 if fig.ok else 1


if __name__ == "__main__":
    sys.exit(main())
