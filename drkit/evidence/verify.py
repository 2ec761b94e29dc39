"""Verify a ledger: every record's hash, the chain, the sequence, signatures, artifact digests.

Each record file is read and parsed once; hashes and signatures are checked with hashlib and
cryptography's Ed25519 directly. Nothing in the store is trusted to be well formed: files that
are not JSON, truncated, huge, with unexpected fields, or symlinks are reported as issues,
never raised.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from drkit.evidence import ledger
from drkit.evidence.record import FIELDS, GENESIS, SCHEMA_VERSION
from drkit.evidence.signing import key_id, load_public_key
from drkit.evidence.store import _PART, FileProblem, Store


@dataclass(frozen=True)
class Issue:
    seq: int | None  # the record's place in the chain (None: not tied to one record)
    record: str  # its id, or the file name
    kind: str  # modified, missing, reordered, chain-broken, bad-signature, artifact-changed,
    # artifact-missing, truncated, corrupt, unexpected-field, unexpected-file, index
    message: str

    def __str__(self) -> str:
        if self.seq is None:
            where = self.record
        else:
            where = f"record #{self.seq}" + (f" ({self.record})" if self.record != "?" else "")
        return f"{where}: {self.kind}: {self.message}"


@dataclass(frozen=True)
class VerifyReport:
    store: str
    key_id: str
    records: int
    artifacts: int
    issues: tuple[Issue, ...]
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.issues

    @property
    def first(self) -> Issue | None:
        return self.issues[0] if self.issues else None

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "store": self.store, "key_id": self.key_id,
                "records": self.records, "artifacts": self.artifacts,
                "first": asdict(self.first) if self.first else None,
                "issues": [asdict(i) for i in self.issues], "notes": list(self.notes)}


def verify(store: Store, public_key: Path) -> VerifyReport:
    """Check the whole ledger against a trusted public key. Never raises for a bad store."""
    from cryptography.exceptions import InvalidSignature

    key = load_public_key(public_key)
    kid = key_id(key)
    issues: list[Issue] = []
    notes: list[str] = []
    store.refresh()
    try:
        files, strays = ledger.record_files(store)
    except FileProblem as e:
        return VerifyReport(store.describe(), kid, 0, 0, (Issue(None, "records/", "corrupt",
                                                                 str(e)),))
    for s in strays:
        issues.append(Issue(None, f"records/{s}", "unexpected-file",
                            "not a record file (records are named <seq:08d>-<id>.json)"))
    expected, prev, n_art = 1, GENESIS, 0
    hashes: dict[int, str] = {}
    dumps, loads = json.dumps, json.loads
    for f in files:
        def bad(kind: str, msg: str, seq: int = f.seq, rid: str = f.id) -> None:
            issues.append(Issue(seq, rid, kind, msg))

        if f.seq > expected:  # a gap: the records in between are gone
            gone = f"#{expected}" if f.seq == expected + 1 else f"#{expected}-#{f.seq - 1}"
            bad("missing", f"record {gone} is missing: the sequence jumps from #{expected - 1} "
                f"to #{f.seq}", seq=expected, rid="?")
            expected, prev = f.seq, None  # do not report the broken link twice
        elif f.seq < expected:
            bad("reordered", f"a second record with sequence number #{f.seq}")
        try:
            raw = store.read(f.key)
        except FileProblem as e:
            bad("corrupt", e.reason)
            expected, prev = f.seq + 1, None
            continue
        try:
            d = loads(raw)
        except (ValueError, RecursionError) as e:
            bad("corrupt", f"not valid JSON ({type(e).__name__}: {str(e)[:80]}); the file was "
                "truncated or edited")
            expected, prev = f.seq + 1, None
            continue
        if not isinstance(d, dict):
            bad("corrupt", "not a JSON object")
            expected, prev = f.seq + 1, None
            continue
        stated, sig = d.pop("hash", None), d.pop("signature", None)
        if not isinstance(stated, str) or not isinstance(sig, str):
            bad("corrupt", "has no hash or no signature")
            expected, prev = f.seq + 1, None
            continue
        extra = d.keys() - FIELDS
        try:
            canon = dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
        except (ValueError, RecursionError) as e:
            bad("corrupt", f"cannot be put in canonical form ({e})")
            expected, prev = f.seq + 1, None
            continue
        actual = hashlib.sha256(canon).hexdigest()
        hashes[f.seq] = stated
        if actual != stated:
            bad("modified", f"its content does not match its hash (stored {stated[:16]}..., "
                f"computed {actual[:16]}...): the record was changed after it was sealed")
        elif d.get("seq") != f.seq or d.get("id") != f.id:
            bad("reordered", f"the file for #{f.seq} ({f.name}) holds record #{d.get('seq')} "
                f"({d.get('id')}): records were moved or swapped")
        elif prev is not None and d.get("prev_hash") != prev:
            bad("chain-broken", f"prev_hash {str(d.get('prev_hash'))[:16]}... is not the hash of "
                f"record #{f.seq - 1} ({prev[:16]}...): a record before it was replaced")
        elif extra:
            bad("unexpected-field", f"fields not in schema_version {SCHEMA_VERSION}: "
                f"{', '.join(sorted(extra))}")
        elif d.get("schema_version") != SCHEMA_VERSION:
            bad("corrupt", f"schema_version {d.get('schema_version')!r} (this drkit reads 1)")
        else:
            try:
                key.verify(base64.b64decode(sig, validate=True), canon)
            except (InvalidSignature, binascii.Error, ValueError):
                named = d.get("key_id")
                other = (f"; it names key {str(named)[:16]}..." if named != kid else "")
                bad("bad-signature", f"the signature is not valid for the trusted key "
                    f"{kid[:16]}...{other} (re-signed or forged)")
            n_art += _artifacts(store, f.seq, f.id, d.get("artifacts"), issues)
        expected, prev = f.seq + 1, stated
    _index(store, hashes, files[-1].seq if files else 0, issues, notes)
    open_runs = [n for n in store.list("open") if n.endswith(".json")]
    if open_runs:
        notes.append(f"{len(open_runs)} run(s) in progress or not yet recovered under open/ "
                     "(not in the chain until sealed)")
    issues.sort(key=lambda i: (i.seq is None, i.seq or 0))
    return VerifyReport(store.describe(), kid, len(files), n_art, tuple(issues), tuple(notes))


def _artifacts(store: Store, seq: int, rid: str, arts: Any, issues: list[Issue]) -> int:
    if not isinstance(arts, list):
        issues.append(Issue(seq, rid, "corrupt", "artifacts is not a list"))
        return 0
    n = 0
    for a in arts:
        name = a.get("name") if isinstance(a, dict) else None
        if not isinstance(name, str) or not _PART.match(name) or ".." in name:
            issues.append(Issue(seq, rid, "corrupt", f"artifact entry {str(a)[:60]!r} is invalid"))
            continue
        try:
            sha, size = store.digest(f"artifacts/{rid}/{name}")
        except FileProblem as e:
            kind = "artifact-missing" if e.reason == "missing" else "artifact-changed"
            issues.append(Issue(seq, rid, kind, f"artifact {name} {e.reason}"))
            continue
        n += 1
        if sha != a.get("sha256") or size != a.get("size"):
            issues.append(Issue(seq, rid, "artifact-changed",
                                f"artifact {name} changed: sha256 {sha[:16]}... ({size} bytes), "
                                f"recorded {str(a.get('sha256'))[:16]}... ({a.get('size')} "
                                "bytes)"))
    return n


def _index(store: Store, hashes: dict[int, str], last: int, issues: list[Issue],
           notes: list[str]) -> None:
    """index.jsonl is a second witness: it must not list records the store lacks."""
    try:
        raw = store.read("index.jsonl", limit=None)
    except FileProblem as e:
        if e.reason != "missing":
            issues.append(Issue(None, "index.jsonl", "index", e.reason))
        elif hashes:
            notes.append("index.jsonl is missing (`drkit evidence list` needs it)")
        return
    listed: dict[int, str] = {}
    for i, line in enumerate(raw.splitlines(), 1):
        try:
            e = json.loads(line)
            listed[int(e["seq"])] = str(e["hash"])
        except (ValueError, KeyError, TypeError):
            issues.append(Issue(None, "index.jsonl", "index", f"line {i} is not an index entry"))
    beyond = sorted(s for s in listed if s > last)
    if beyond:
        issues.append(Issue(last + 1, "?", "truncated",
                            f"the ledger was truncated: index.jsonl lists {len(listed)} records "
                            f"up to #{beyond[-1]}, the store ends at #{last} (records "
                            f"#{beyond[0]}-#{beyond[-1]} are gone)"))
    for s, h in listed.items():
        if s in hashes and hashes[s] != h:
            issues.append(Issue(s, "index.jsonl", "index",
                                f"index.jsonl names hash {h[:16]}... for #{s}, the record has "
                                f"{hashes[s][:16]}... (the record was replaced)"))
    behind = [s for s in hashes if s not in listed]
    if behind:
        notes.append(f"index.jsonl lacks {len(behind)} record(s) (a crash while sealing; the "
                     "next seal adds them)")
