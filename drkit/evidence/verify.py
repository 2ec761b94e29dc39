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
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from drkit.evidence import ledger
from drkit.evidence.record import FIELDS, GENESIS, SCHEMA_VERSION
from drkit.evidence.signing import key_id, load_public_key
from drkit.evidence.store import _PART, FileProblem, LocalStore, Store


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


@dataclass(frozen=True)
class _Checked:
    """One record file checked on its own; the chain is checked across them afterwards."""

    seq: int
    id: str
    hash: str | None  # the hash it states (None: unreadable)
    prev_hash: object
    own: tuple[Issue, ...]  # problems of the record itself (hash, place, schema, signature)
    artifacts: tuple[Issue, ...]
    n_artifacts: int


def _canon_fast(raw: bytes, h: str, sig: str) -> bytes | None:
    """The canonical bytes, cut out of a record file written by drkit, without re-encoding.

    A file drkit writes is the canonical JSON of the whole record, so removing the members
    `"hash":"<h>",` and `"signature":"<s>",` leaves the canonical bytes. This is safe for any
    file, hostile ones included: the result is only used if its SHA-256 equals the stated hash,
    i.e. if it IS the sealed canonical form C; then the file is C plus exactly those two members,
    and since the parsed file has them as top-level keys, they were inserted at top-level member
    boundaries, which leaves every other member (what verify then checks) as C has it.
    """
    data = raw.rstrip(b"\n")
    for member in (b'"hash":' + json.dumps(h).encode() + b",",
                   b'"signature":' + json.dumps(sig).encode() + b","):
        i = data.find(member)
        if i < 0:
            return None
        data = data[:i] + data[i + len(member):]
    return data


def _check(store: Store, read: Callable[[str], bytes], f: ledger.RecordFile, key: Any,
           kid: str) -> _Checked:
    from cryptography.exceptions import InvalidSignature

    def out(*own: Issue, h: str | None = None, prev: object = None,
            arts: tuple[Issue, ...] = (), n: int = 0) -> _Checked:
        return _Checked(f.seq, f.id, h, prev, own, arts, n)

    def bad(kind: str, msg: str) -> Issue:
        return Issue(f.seq, f.id, kind, msg)

    try:
        raw = read(f.name)
    except FileProblem as e:
        return out(bad("corrupt", e.reason))
    try:
        d = json.loads(raw)
    except (ValueError, RecursionError) as e:
        return out(bad("corrupt", f"not valid JSON ({type(e).__name__}: {str(e)[:80]}); the "
                       "file was truncated or edited"))
    if not isinstance(d, dict):
        return out(bad("corrupt", "not a JSON object"))
    stated, sig = d.pop("hash", None), d.pop("signature", None)
    if not isinstance(stated, str) or not isinstance(sig, str):
        return out(bad("corrupt", "has no hash or no signature"))
    canon = _canon_fast(raw, stated, sig)
    if canon is None or hashlib.sha256(canon).hexdigest() != stated:
        try:  # not in drkit's own layout (reformatted?): the content is what counts
            canon = json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                               allow_nan=False).encode("utf-8")
        except (ValueError, RecursionError) as e:
            return out(bad("corrupt", f"cannot be put in canonical form ({e})"))
    actual = hashlib.sha256(canon).hexdigest()
    prev = d.get("prev_hash")
    if actual != stated:
        return out(bad("modified", f"its content does not match its hash (stored "
                       f"{stated[:16]}..., computed {actual[:16]}...): the record was changed "
                       "after it was sealed"), h=stated, prev=prev)
    if d.get("seq") != f.seq or d.get("id") != f.id:
        return out(bad("reordered", f"the file for #{f.seq} ({f.name}) holds record "
                       f"#{d.get('seq')} ({d.get('id')}): records were moved or swapped"),
                   h=stated, prev=prev)
    extra = d.keys() - FIELDS
    if extra:
        return out(bad("unexpected-field", f"fields not in schema_version {SCHEMA_VERSION}: "
                       f"{', '.join(sorted(extra))}"), h=stated, prev=prev)
    if d.get("schema_version") != SCHEMA_VERSION:
        return out(bad("corrupt", f"schema_version {d.get('schema_version')!r} (this drkit "
                       "reads 1)"), h=stated, prev=prev)
    try:
        key.verify(base64.b64decode(sig, validate=True), canon)
    except (InvalidSignature, binascii.Error, ValueError):
        named = d.get("key_id")
        other = f"; it names key {str(named)[:16]}..." if named != kid else ""
        return out(bad("bad-signature", f"the signature is not valid for the trusted key "
                       f"{kid[:16]}...{other} (re-signed or forged)"), h=stated, prev=prev)
    arts: list[Issue] = []
    n = _artifacts(store, f.seq, f.id, d.get("artifacts"), arts)
    return out(h=stated, prev=prev, arts=tuple(arts), n=n)


def _check_chunk(root: str, files: list[ledger.RecordFile], pub: bytes) -> list[_Checked]:
    """Worker side of a parallel verify (a forked process, over a local store)."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    from drkit.evidence.store import LocalStore

    key = load_pem_public_key(pub)
    kid = key_id(key)  # type: ignore[arg-type]
    return _check_serial(LocalStore(Path(root)), files, key, kid)


def _check_serial(store: Store, files: list[ledger.RecordFile], key: Any,
                  kid: str) -> list[_Checked]:
    try:
        with store.reader("records") as read:
            return [_check(store, read, f, key, kid) for f in files]
    except FileProblem as e:
        return [_Checked(f.seq, f.id, None, None, (Issue(f.seq, f.id, "corrupt", e.reason),),
                         (), 0) for f in files]


PARALLEL_MIN = 2000  # below this, forking costs more than it saves


def _check_all(store: Store, files: list[ledger.RecordFile], key: Any, kid: str,
               public_key: Path) -> list[_Checked]:
    workers = min(os.cpu_count() or 1, 8)
    if workers < 2 or len(files) < PARALLEL_MIN or not isinstance(store, LocalStore):
        return _check_serial(store, files, key, kid)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # Signatures and JSON are CPU-bound and hold the GIL: use the cores. fork, because the
    # workers need nothing but what this process already imported.
    size = -(-len(files) // workers)
    chunks = [files[i:i + size] for i in range(0, len(files), size)]
    pub = public_key.read_bytes()
    try:
        with ProcessPoolExecutor(len(chunks),
                                 mp_context=multiprocessing.get_context("fork")) as ex:
            parts = list(ex.map(_check_chunk, [str(store.root)] * len(chunks), chunks,
                                [pub] * len(chunks)))
    except (OSError, RuntimeError):  # no fork here (a sandbox): do it in this process
        return _check_serial(store, files, key, kid)
    return [c for part in parts for c in part]


def verify(store: Store, public_key: Path) -> VerifyReport:
    """Check the whole ledger against a trusted public key. Never raises for a bad store."""
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
    prev: str | None  # None: the previous link is unknown (a gap or an unreadable record)
    expected, prev, n_art = 1, GENESIS, 0
    hashes: dict[int, str] = {}
    for c in _check_all(store, files, key, kid, public_key):
        if c.seq > expected:  # a gap: the records in between are gone
            gone = f"#{expected}" if c.seq == expected + 1 else f"#{expected}-#{c.seq - 1}"
            issues.append(Issue(expected, "?", "missing", f"record {gone} is missing: the "
                                f"sequence jumps from #{expected - 1} to #{c.seq}"))
            prev = None  # do not report the broken link twice
        elif c.seq < expected:
            issues.append(Issue(c.seq, c.id, "reordered",
                                f"a second record with sequence number #{c.seq}"))
        if c.own:
            issues.extend(c.own)
        elif prev is not None and c.prev_hash != prev:
            issues.append(Issue(c.seq, c.id, "chain-broken",
                                f"prev_hash {str(c.prev_hash)[:16]}... is not the hash of record "
                                f"#{c.seq - 1} ({prev[:16]}...): a record before it was replaced"))
        issues.extend(c.artifacts)
        n_art += c.n_artifacts
        if c.hash is not None:
            hashes[c.seq] = c.hash
        expected, prev = c.seq + 1, c.hash
    _index(store, hashes, files[-1].seq if files else 0, issues, notes)
    try:
        open_runs = [n for n in store.list("open") if n.endswith(".json")]
    except FileProblem as e:  # open/ a symlink or a file: reported like records/ would be
        issues.append(Issue(None, "open/", "corrupt", str(e)))
        open_runs = []
    if open_runs:
        notes.append(f"{len(open_runs)} run(s) in progress or not yet recovered under open/ "
                     "(not in the chain until sealed)")
    issues.sort(key=lambda i: (i.seq is None, i.seq or 0))
    return VerifyReport(store.describe(), kid, len(files), n_art, tuple(issues), tuple(notes))


def _artifacts(store: Store, seq: int, rid: str, arts: Any, issues: list[Issue]) -> int:
    if not isinstance(arts, list):
        issues.append(Issue(seq, rid, "corrupt", "artifacts is not a list"))
        return 0
    good = []
    for a in arts:
        name = a.get("name") if isinstance(a, dict) else None
        if not isinstance(name, str) or not _PART.match(name) or ".." in name:
            issues.append(Issue(seq, rid, "corrupt", f"artifact entry {str(a)[:60]!r} is invalid"))
        else:
            good.append(a)
    if not good:
        return 0
    n = 0
    for a, got in zip(good, store.digest_many(f"artifacts/{rid}", [a["name"] for a in good]),
                      strict=True):
        name = a["name"]
        if isinstance(got, FileProblem):
            kind = "artifact-missing" if got.reason == "missing" else "artifact-changed"
            issues.append(Issue(seq, rid, kind, f"artifact {name} {got.reason}"))
            continue
        sha, size = got
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
    for i, entry in enumerate(ledger.parse_lines(raw), 1):
        try:
            # entry is any JSON value: a non-object raises TypeError, reported below.
            listed[int(entry["seq"])] = str(entry["hash"])  # type: ignore[index]
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
