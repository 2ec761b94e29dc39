"""Reading the ledger: its head, the index, and one record by id, prefix or sequence number."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from drkit.errors import BadInput, RunFailed
from drkit.evidence.record import GENESIS, IndexEntry, Record, utc
from drkit.evidence.store import RECORD_FILE, FileProblem, Store, record_key


@dataclass(frozen=True)
class RecordFile:
    seq: int
    id: str
    name: str

    @property
    def key(self) -> str:
        return f"records/{self.name}"


def record_files(store: Store) -> tuple[list[RecordFile], list[str]]:
    """Record files sorted by the sequence number in their name, and names that are not records."""
    files, strays = [], []
    for name in store.list("records"):
        m = RECORD_FILE.match(name)
        if m:
            files.append(RecordFile(int(m.group(1)), m.group(2), name))
        elif not name.startswith("."):  # .tmp files of an atomic write in progress
            strays.append(name)
    files.sort(key=lambda f: (f.seq, f.id))
    return files, strays


def load_dict(store: Store, key: str) -> dict:
    try:
        data = json.loads(store.read(key))
    except FileProblem as e:
        raise RunFailed(f"evidence store {store.describe()}: {e}") from None
    except (ValueError, RecursionError) as e:  # RecursionError: `[[[[...` nested 100,000 deep
        raise RunFailed(f"evidence store {store.describe()}: {key} is not JSON ({e}); run "
                        "`drkit evidence verify`") from None
    if not isinstance(data, dict):
        raise RunFailed(f"evidence store {store.describe()}: {key} is not a JSON object")
    return data


def head(store: Store) -> tuple[int, str]:
    """(seq, hash) of the last sealed record, or (0, GENESIS) for an empty ledger."""
    files, _ = record_files(store)
    if not files:
        return 0, GENESIS
    last = files[-1]
    d = load_dict(store, last.key)
    h = d.get("hash")
    if d.get("seq") != last.seq or not isinstance(h, str):
        raise RunFailed(f"evidence store {store.describe()}: the last record {last.name} is "
                        "damaged; run `drkit evidence verify` before adding to the ledger")
    return last.seq, h


def read_index(store: Store) -> list[IndexEntry]:
    """The index lines (the fast path for `list`); damaged lines are skipped here, and verify
    reports them."""
    try:
        raw = store.read("index.jsonl", limit=None)
    except FileProblem as e:
        if e.reason == "missing":
            return []
        raise RunFailed(f"evidence store {store.describe()}: {e}") from None
    out = []
    for d in parse_lines(raw):
        if not isinstance(d, dict):  # damaged (None) or not an object: parse() would fail too
            continue
        try:
            out.append(IndexEntry.parse(d))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return out


def parse_lines(raw: bytes) -> list[object]:
    """JSON lines, parsed in one call when they are all well formed (10,000 json.loads calls
    cost more than the parsing itself); line by line otherwise, None for a damaged line."""
    lines = [line for line in raw.split(b"\n") if line.strip()]
    try:
        whole = json.loads(b"[" + b",".join(lines) + b"]")
        if len(whole) == len(lines):
            return whole
    except (ValueError, RecursionError):
        pass
    out: list[object] = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except (ValueError, RecursionError):
            out.append(None)
    return out


def select(entries: Iterable[IndexEntry], *, kind: str | None = None,
           since: datetime | None = None, name: str | None = None,
           environment: str | None = None) -> list[IndexEntry]:
    cutoff = utc(since) if since else None  # same fixed-width format: strings compare as times
    return [e for e in entries
            if (kind is None or e.kind == kind) and (name is None or e.name == name)
            and (environment is None or e.environment == environment)
            and (cutoff is None or e.started_at >= cutoff)]


def resolve_ref(store: Store, ref: str) -> RecordFile:
    """A record by id, unique id prefix, or sequence number ('42' or '#42')."""
    ref = ref.strip()
    files, _ = record_files(store)
    num = ref.removeprefix("#")
    if num.isdigit() and len(num) < 8:
        for f in files:
            if f.seq == int(num):
                return f
    hits = [f for f in files if f.id == ref] or [f for f in files if f.id.startswith(ref)]
    if not ref or not hits:
        raise BadInput(f"no evidence record {ref!r} in {store.describe()} "
                       "(see `drkit evidence list`)")
    if len(hits) > 1:
        raise BadInput(f"{ref!r} matches {len(hits)} records ({', '.join(f.id for f in hits[:5])}"
                       f"{', ...' if len(hits) > 5 else ''}); give more of the id")
    return hits[0]


def load_record(store: Store, ref: str) -> Record:
    f = resolve_ref(store, ref)
    return Record.from_dict(load_dict(store, record_key(f.seq, f.id)))
