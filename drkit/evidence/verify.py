"""Verify a ledger: records, chain, signatures against pinned keys, artifacts, the anchor.

Every record is read and parsed once, strictly (duplicate member names and non-finite
numbers are damage); its hash is recomputed in the canonical form of its schema_version
(RFC 8785 for 2), its signature checked with a TRUSTED key: a key whose fingerprint the plan
pins (`evidence.trusted_keys`, or `--trust`), or, when nothing is pinned, a public key file
the caller named. A v2 record carries its public key, but that key is only used once its
fingerprint is trusted: a store re-signed with a new key and its own public key fails.

Strict: files the ledger does not list (in records/, an artifact folder, the store's root) and
artifact folders of no record are reported; so are records that contradict themselves (RTO
against target and rto_met, verdict against phases, smoke, targets and findings, the clock
against the phases); on S3, every record must have exactly one object version, locked in
COMPLIANCE mode until at least its retention date. The head is checked against the anchor
and `expect_seq`. Nothing is ever written: verify reads a store, it never repairs or seals.

Nothing in the store is trusted to be well formed: every problem is an Issue, never raised.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from drkit.evidence import ledger
from drkit.evidence.jcs import loads_strict
from drkit.evidence.record import FIELDS, GENESIS, SCHEMA_VERSIONS, UNSIGNED, canonical, parse_time
from drkit.evidence.signing import (
    fingerprint,
    key_id,
    load_public_key,
    load_public_pem,
    verify_signature,
)
from drkit.evidence.store import _PART, FileProblem, LocalStore, Store

# What may sit at the top of a store (local: .lock; .tmp files of an atomic write start with .)
# Also governance's registers (findings.jsonl, requests/): drkit/governance keeps them beside a
# local store's records by design; they are not evidence and not checked here (a failed drill
# opens a finding, and verify called that tampering: found by issue 18's remote test).
TOP_LEVEL = {"records", "artifacts", "open", "index.jsonl", "findings.jsonl", "requests"}
FAILED = {"failed", "unreachable", "aborted", "interrupted", "running"}
CLOCK_SLACK_MS = 1000  # rounding between the measured RTO and the clock's two times


@dataclass(frozen=True)
class Issue:
    seq: int | None  # the record's place in the chain (None: not tied to one record)
    record: str  # its id, or the file name
    kind: str  # modified, missing, reordered, chain-broken, bad-signature, untrusted-key,
    # artifact-changed, artifact-missing, truncated, corrupt, unexpected-field,
    # unexpected-file, orphan, inconsistent, index, anchor, timestamp, s3-version, s3-lock
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
    key_id: str  # the first trusted fingerprint (compatibility: one key)
    records: int
    artifacts: int
    issues: tuple[Issue, ...]
    notes: tuple[str, ...] = ()
    trusted: tuple[str, ...] = ()  # fingerprints verify accepted
    pinned: bool = False  # trusted came from pins (plan/--trust), not from key files alone
    keys_used: tuple[str, ...] = ()  # fingerprints that signed records, in chain order
    head: tuple[int, str] | None = None  # (seq, hash) of the last record
    anchor: str | None = None  # the anchor checked, if any

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
                "issues": [asdict(i) for i in self.issues], "notes": list(self.notes),
                "trusted_keys": list(self.trusted), "pinned": self.pinned,
                "keys_used": list(self.keys_used),
                "head": {"seq": self.head[0], "hash": self.head[1]} if self.head else None,
                "anchor": self.anchor}


@dataclass
class Trust:
    """The keys verify accepts: fingerprints, and the public keys it holds for them."""

    fingerprints: set[str] = field(default_factory=set)
    keys: dict[str, Any] = field(default_factory=dict)  # fingerprint -> public key
    legacy: dict[str, Any] = field(default_factory=dict)  # v1 raw-key id -> Ed25519 key
    pinned: bool = False
    ignored: list[str] = field(default_factory=list)
    embedded: dict[str, tuple[Any, str]] = field(default_factory=dict)  # PEM -> (key, fp)

    def key_of(self, pem: str) -> tuple[Any, str]:
        """A record's embedded public key and its fingerprint (parsed once per ledger)."""
        got = self.embedded.get(pem)
        if got is None:
            key = load_public_pem(pem.encode(), "its public key")
            got = self.embedded[pem] = (key, fingerprint(key))
        return got

    @classmethod
    def build(cls, pins: Iterable[str], pems: Sequence[tuple[str, bytes]]) -> Trust:
        t = cls(fingerprints=set(pins))
        t.pinned = bool(t.fingerprints)
        for where, pem in pems:
            key = load_public_pem(pem, where)
            fp = fingerprint(key)
            if t.pinned and fp not in t.fingerprints:
                t.ignored.append(f"{where} (key {fp[:16]}...) is not pinned: not trusted")
                continue
            t.fingerprints.add(fp)
            t.keys[fp] = key
            try:
                t.legacy[key_id(key)] = key
            except (ValueError, TypeError):  # not Ed25519: no v1 id
                pass
        return t

    def pems(self) -> list[tuple[str, bytes]]:
        from drkit.evidence.signing import public_pem

        return [(fp, public_pem(k).encode()) for fp, k in self.keys.items()]


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
    key: str | None = None  # fingerprint (v2) or key id (v1) that signed it
    facts: tuple[Issue, ...] = ()  # internal consistency problems
    timestamp: str | None = None
    ended_at: str | None = None
    retention_days: int | None = None


def _canon_fast(raw: bytes, d: dict[str, Any], unsigned: dict[str, str]) -> bytes | None:
    """The canonical bytes, cut out of a record file written by drkit, without re-encoding.

    A file drkit writes is the canonical JSON of the whole record, so removing the unsigned
    members (`"hash":"<h>",` ...) leaves the canonical bytes. This is safe for any file,
    hostile ones included: the result is only used if its SHA-256 equals the stated hash,
    i.e. if it IS the sealed canonical form C; then the file is C plus exactly those members,
    and since the parsed file has them as top-level keys, they were inserted at top-level
    member boundaries, which leaves every other member (what verify then checks) as C has it.
    """
    data = raw.rstrip(b"\n")
    for name, value in unsigned.items():
        member = b'"' + name.encode() + b'":' + json.dumps(value).encode()
        i = data.find(member + b",")
        if i >= 0:
            data = data[:i] + data[i + len(member) + 1:]
            continue
        i = data.find(b"," + member + b"}")  # the last member (`timestamp` sorts last)
        if i < 0 or i + len(member) + 2 != len(data):
            return None
        data = data[:i] + b"}"
    return data


def consistency(d: dict[str, Any]) -> list[str]:
    """What a record says that contradicts what else it says (one sentence each)."""
    out: list[str] = []
    try:
        targets = [t for t in d.get("targets") or () if isinstance(t, dict)]
        for t in targets:
            svc = t.get("service")
            for what in ("rto", "rpo"):
                m, tg, met = (t.get(f"{what}_measured_ms"), t.get(f"{what}_target_ms"),
                              t.get(f"{what}_met"))
                if met is True and m is None:
                    out.append(f"{svc}: {what}_met is true but no {what.upper()} was measured")
                elif isinstance(m, int) and isinstance(tg, int) and isinstance(met, bool) \
                        and met != (m <= tg):
                    out.append(f"{svc}: {what}_met is {str(met).lower()} with {m} ms measured "
                               f"against a {tg} ms target")
        verdict = d.get("verdict")
        phases = [p for p in d.get("phases") or () if isinstance(p, dict)]
        smoke = [s for s in d.get("smoke") or () if isinstance(s, dict)]
        findings = [f for f in d.get("findings") or () if isinstance(f, dict)]
        bad_phases = [str(p.get("name")) for p in phases if p.get("status") in FAILED]
        bad_smoke = [str(s.get("flow")) for s in smoke if s.get("status") != "ok"]
        missed = [f"{t.get('service')} {w.upper()}" for t in targets for w in ("rto", "rpo")
                  if t.get(f"{w}_met") is False]
        if verdict == "pass":
            if not phases:
                out.append("verdict pass with no phases")
            if bad_phases:
                out.append(f"verdict pass with phase(s) {', '.join(bad_phases)} not ok")
            if bad_smoke:
                out.append(f"verdict pass with smoke flow(s) {', '.join(bad_smoke)} not ok")
            if missed:
                out.append(f"verdict pass with target(s) missed: {', '.join(missed)}")
            high = [str(f.get("check")) for f in findings if f.get("severity") == "high"]
            if high:
                out.append(f"verdict pass with high finding(s): {', '.join(high)}")
        elif verdict == "fail" and not (bad_phases or bad_smoke or missed or findings):
            out.append("verdict fail with nothing failed: no failed phase, smoke flow, missed "
                       "target or finding")
        elif verdict == "running":
            out.append("a sealed record with verdict running")
        raw_clock = d.get("clock")
        clock: dict[str, Any] = raw_clock if isinstance(raw_clock, dict) else {}
        c0, c1 = clock.get("started_at"), clock.get("stopped_at")
        if c0 and c1:
            span = round((parse_time(c1) - parse_time(c0)).total_seconds() * 1000)
            if span < 0:
                out.append(f"the recovery clock stops ({c1}) before it starts ({c0})")
            # drkit's times are fixed-width UTC strings: the latest sorts last.
            ends = [p["ended_at"] for p in phases if isinstance(p.get("ended_at"), str)]
            if ends and parse_time(c1) > parse_time(max(ends)) + timedelta(
                    milliseconds=CLOCK_SLACK_MS):
                out.append(f"the recovery clock stops ({c1}) after the last phase ended")
            for t in targets:
                m = t.get("rto_measured_ms")
                if isinstance(m, int) and abs(m - span) > CLOCK_SLACK_MS:
                    out.append(f"{t.get('service')}: RTO {m} ms measured, but the recovery "
                               f"clock ran {span} ms ({c0} to {c1})")
        elif any(isinstance(t.get("rto_measured_ms"), int) for t in targets) and not c1:
            out.append("an RTO was measured but the recovery clock never stopped")
        s0, s1 = d.get("started_at"), d.get("ended_at")
        if s0 and s1 and parse_time(s1) < parse_time(s0):
            out.append(f"the record ends ({s1}) before it starts ({s0})")
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        out.append(f"cannot be checked for consistency ({type(e).__name__}: {e})")
    return out


def _check(store: Store, read: Callable[[str], bytes], f: ledger.RecordFile,
           trust: Trust) -> _Checked:
    def out(*own: Issue, h: str | None = None, prev: object = None,
            arts: tuple[Issue, ...] = (), n: int = 0, **kw: Any) -> _Checked:
        return _Checked(f.seq, f.id, h, prev, own, arts, n, **kw)

    def bad(kind: str, msg: str) -> Issue:
        return Issue(f.seq, f.id, kind, msg)

    try:
        raw = read(f.name)
    except FileProblem as e:
        return out(bad("corrupt", e.reason))
    try:
        d = loads_strict(raw)  # duplicate member names and non-finite numbers are damage
    except (ValueError, RecursionError) as e:
        return out(bad("corrupt", f"not valid JSON ({type(e).__name__}: {str(e)[:80]}); the "
                       "file was truncated or edited"))
    if not isinstance(d, dict):
        return out(bad("corrupt", "not a JSON object"))
    version = d.get("schema_version")
    if version not in SCHEMA_VERSIONS or isinstance(version, bool):
        return out(bad("corrupt", f"schema_version {version!r} (this drkit reads 1 and 2)"),
                   h=d.get("hash") if isinstance(d.get("hash"), str) else None,
                   prev=d.get("prev_hash"))
    unsigned = {k: d.pop(k) for k in UNSIGNED if k in d and (version == 2 or k != "timestamp")}
    stated, sig, ts = unsigned.get("hash"), unsigned.get("signature"), unsigned.get("timestamp")
    if not isinstance(stated, str) or not isinstance(sig, str) or \
            (ts is not None and not isinstance(ts, str)):
        return out(bad("corrupt", "has no hash or no signature"))
    canon = _canon_fast(raw, d, unsigned)
    if canon is None or hashlib.sha256(canon).hexdigest() != stated:
        try:  # not in drkit's own layout (reformatted?): the content is what counts
            canon = canonical(d)
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
    extra = d.keys() - FIELDS[version]
    if extra:
        return out(bad("unexpected-field", f"fields not in schema_version {version}: "
                       f"{', '.join(sorted(extra))}"), h=stated, prev=prev)
    named = str(d.get("key_id"))
    if version == 2:
        raw_signer = d.get("signer")
        signer: dict[str, Any] = raw_signer if isinstance(raw_signer, dict) else {}
        try:
            key, fp = trust.key_of(str(signer.get("public_key", "")))
        except Exception:  # noqa: BLE001 - any damage to the embedded key is reported
            return out(bad("bad-signature", "its signer.public_key is not a public key"),
                       h=stated, prev=prev)
        if fp != named or signer.get("key_id") != fp:
            return out(bad("bad-signature", f"key_id {named[:16]}... is not the fingerprint of "
                           f"its public key ({fp[:16]}...)"), h=stated, prev=prev)
        if fp not in trust.fingerprints:
            return out(bad("untrusted-key", f"signed by key {fp[:16]}..., which is not "
                           f"{'pinned' if trust.pinned else 'the trusted key'} ("
                           f"{', '.join(sorted(x[:16] + '...' for x in trust.fingerprints))}"
                           "): re-signed by someone else, or a key rotation nobody pinned"),
                       h=stated, prev=prev, key=fp)
        signed_by = fp
    else:
        key = trust.legacy.get(named) or next(iter(trust.legacy.values()), None)
        signed_by = named
        if key is None:
            return out(bad("untrusted-key", "a schema_version 1 record (Ed25519) needs the "
                           "trusted public key file (--public-key)"), h=stated, prev=prev)
    if not verify_signature(key, canon, sig):
        other = "" if named in trust.legacy or named in trust.fingerprints else \
            f"; it names key {named[:16]}..."
        return out(bad("bad-signature", f"the signature is not valid for the trusted key"
                       f"{other} (re-signed or forged)"), h=stated, prev=prev, key=signed_by)
    arts: list[Issue] = []
    n = _artifacts(store, f.seq, f.id, d.get("artifacts"), arts)
    facts = tuple(bad("inconsistent", m) for m in consistency(d))
    rd = d.get("retention_days")
    return out(h=stated, prev=prev, arts=tuple(arts), n=n, key=signed_by, facts=facts,
               timestamp=ts, ended_at=d.get("ended_at") if isinstance(d.get("ended_at"), str)
               else None, retention_days=rd if isinstance(rd, int) else None)


def _check_chunk(root: str, files: list[ledger.RecordFile], pins: list[str],
                 pems: list[tuple[str, bytes]]) -> list[_Checked]:
    """Worker side of a parallel verify (a forked process, over a local store)."""
    from drkit.evidence.store import LocalStore

    return _check_serial(LocalStore(Path(root)), files, Trust.build(pins, pems))


def _check_serial(store: Store, files: list[ledger.RecordFile], trust: Trust) -> list[_Checked]:
    import gc

    # Each record's parsed JSON is freed as soon as it is checked, and nothing here makes
    # cycles: the cycle collector would only walk the growing list of results (~12% of the CPU).
    enabled = gc.isenabled()
    gc.disable()
    try:
        with store.reader("records") as read:
            return [_check(store, read, f, trust) for f in files]
    except FileProblem as e:
        return [_Checked(f.seq, f.id, None, None, (Issue(f.seq, f.id, "corrupt", e.reason),),
                         (), 0) for f in files]
    finally:
        if enabled:
            gc.enable()


PARALLEL_MIN = 2000  # below this, forking costs more than it saves


def _check_all(store: Store, files: list[ledger.RecordFile], trust: Trust,
               pins: list[str], pems: list[tuple[str, bytes]]) -> list[_Checked]:
    workers = min(os.cpu_count() or 1, 8)
    if workers < 2 or len(files) < PARALLEL_MIN or not isinstance(store, LocalStore):
        return _check_serial(store, files, trust)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # Signatures and JSON are CPU-bound and hold the GIL: use the cores. fork, because the
    # workers need nothing but what this process already imported. This process checks the
    # first share itself while the workers check the others (one process fewer to start, and
    # a share fewer to send back).
    size = -(-len(files) // workers)
    chunks = [files[i:i + size] for i in range(0, len(files), size)]
    try:
        with ProcessPoolExecutor(len(chunks) - 1,
                                 mp_context=multiprocessing.get_context("fork")) as ex:
            rest = [ex.submit(_check_chunk, str(store.root), c, pins, pems) for c in chunks[1:]]
            first = _check_serial(store, chunks[0], trust)
            parts = [first, *(f.result() for f in rest)]
    except (OSError, RuntimeError):  # no fork here (a sandbox): do it in this process
        return _check_serial(store, files, trust)
    return [c for part in parts for c in part]


def _key_sources(public_key: Path | Sequence[Path] | None) -> list[Path]:
    if public_key is None:
        return []
    if isinstance(public_key, str | Path):
        return [Path(public_key)]
    return [Path(p) for p in public_key]


def verify(store: Store, public_key: Path | Sequence[Path] | None = None, *,
           trusted: Iterable[str] = (), anchor: Any = None, expect_seq: int | None = None,
           tsa_ca: Path | None = None) -> VerifyReport:
    """Check the whole ledger. `trusted`: pinned fingerprints (plan's evidence.trusted_keys,
    --trust); `public_key`: key files (trusted themselves only when nothing is pinned; needed
    for schema_version 1 records). `anchor`: a drkit.evidence.anchor.Anchor to check the head
    against. Raises BadInput only for unusable inputs (an unreadable key file); never for a
    bad store."""
    from drkit.errors import BadInput

    pins = sorted(set(trusted))
    pems: list[tuple[str, bytes]] = []
    for p in _key_sources(public_key):
        load_public_key(p)  # BadInput with the file's name when it is not a key
        pems.append((str(p), p.read_bytes()))
    trust = Trust.build(pins, pems)
    if not trust.fingerprints:
        raise BadInput("no trusted key to verify with: pin fingerprints (evidence.trusted_keys "
                       "in the plan, or --trust SHA256) or pass --public-key FILE")
    issues: list[Issue] = []
    notes: list[str] = list(trust.ignored)
    kid = sorted(trust.fingerprints)[0]

    def report(records: int = 0, n_art: int = 0, used: Sequence[str] = (),
               head: tuple[int, str] | None = None) -> VerifyReport:
        issues.sort(key=lambda i: (i.seq is None, i.seq or 0))
        return VerifyReport(store.describe(), kid, records, n_art, tuple(issues), tuple(notes),
                            tuple(sorted(trust.fingerprints)), trust.pinned, tuple(used), head,
                            anchor.describe() if anchor is not None else None)

    store.refresh()
    try:
        files, strays = ledger.record_files(store)
    except FileProblem as e:
        issues.append(Issue(None, "records/", "corrupt", str(e)))
        return report()
    for s in strays:
        issues.append(Issue(None, f"records/{s}", "unexpected-file",
                            "not a record file (records are named <seq:08d>-<id>.json)"))
    prev: str | None  # None: the previous link is unknown (a gap or an unreadable record)
    expected, prev, n_art = 1, GENESIS, 0
    hashes: dict[int, str] = {}
    used: list[str] = []
    checked = _check_all(store, files, trust, pins, trust.pems() if pins else pems)
    no_ts = 0
    for c in checked:
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
        issues.extend(c.facts)
        issues.extend(c.artifacts)
        n_art += c.n_artifacts
        if c.key is not None and not c.own:
            if used and used[-1] != c.key:
                notes.append(f"key rotation at record #{c.seq}: signed by {c.key[:16]}... "
                             f"(before: {used[-1][:16]}...); both are trusted")
            used.append(c.key)
        if c.hash is not None:
            hashes[c.seq] = c.hash
        if tsa_ca is not None and c.hash is not None and not c.own:
            no_ts += _timestamp(c, tsa_ca, issues)
        expected, prev = c.seq + 1, c.hash
    if no_ts:
        notes.append(f"{no_ts} record(s) carry no RFC 3161 time stamp")
    last = files[-1].seq if files else 0
    head = (last, hashes[last]) if last in hashes else None
    _index(store, hashes, last, issues, notes)
    _layout(store, {f.id for f in files}, issues, notes, trust)
    if anchor is not None:
        _anchor(anchor, hashes, last, issues, notes)
    if expect_seq is not None and last < expect_seq:
        issues.append(Issue(last + 1, "?", "truncated",
                            f"records after #{last} are gone: the auditor last saw "
                            f"#{expect_seq} (--expect-seq {expect_seq})"))
    from drkit.evidence.s3 import S3Store

    if isinstance(store, S3Store):
        _s3_versions(store, files, {c.seq: c for c in checked}, issues)
    return report(len(files), n_art, tuple(dict.fromkeys(used)), head)


def _timestamp(c: _Checked, ca: Path, issues: list[Issue]) -> int:
    if c.timestamp is None:
        return 1
    from drkit.evidence import tsa

    why = tsa.verify(c.timestamp, c.hash or "", ca)
    if why:
        issues.append(Issue(c.seq, c.id, "timestamp", f"its RFC 3161 time stamp does not verify "
                            f"against {ca}: {why}"))
    return 0


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
    listed = {a["name"] for a in good}
    try:
        results, present = store.digest_folder(f"artifacts/{rid}", [a["name"] for a in good])
    except FileProblem as e:
        if good:
            kind = "artifact-missing" if e.reason == "missing" else "artifact-changed"
            issues.append(Issue(seq, rid, kind, f"artifacts/{rid}: {e.reason}"))
        return 0
    for extra in sorted({n for n in present if not n.startswith(".")} - listed):
        issues.append(Issue(seq, rid, "unexpected-file", f"artifacts/{rid}/{extra} is not one "
                            "of the record's artifacts (planted after sealing)"))
    if not good:
        return 0
    n = 0
    for a, got in zip(good, results, strict=True):
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


def _layout(store: Store, sealed: set[str], issues: list[Issue], notes: list[str],
            trust: Trust) -> None:
    """Files the ledger does not account for: at the root, orphan artifact folders, open/."""
    try:
        top = store.top_level()
    except FileProblem as e:
        issues.append(Issue(None, ".", "corrupt", str(e)))
        return
    for n in sorted(top - TOP_LEVEL):
        if not n.startswith("."):
            issues.append(Issue(None, n, "unexpected-file", "not part of an evidence store "
                                "(records/, artifacts/, open/, index.jsonl)"))
    open_ids: set[str] = set()
    try:
        open_names = [n for n in store.list("open") if not n.startswith(".")]
    except FileProblem as e:  # open/ a symlink or a file: reported like records/ would be
        issues.append(Issue(None, "open/", "corrupt", str(e)))
        open_names = []
    unsigned = []
    for n in sorted(open_names):
        rid = n.removesuffix(".json")
        open_ids.add(rid)
        if not n.endswith(".json") or not _open_signed(store, n, trust):
            unsigned.append(n)
    for n in unsigned:
        issues.append(Issue(None, f"open/{n}", "unexpected-file", "an open record not signed "
                            "by a trusted key: planted (drkit will never seal it)"))
    if len(open_names) > len(unsigned):
        notes.append(f"{len(open_names) - len(unsigned)} run(s) in progress or not yet recovered "
                     "under open/ (not in the chain until sealed; `drkit drill recover` seals "
                     "those whose writer died)")
    try:
        folders = store.list_folders("artifacts")
    except FileProblem as e:
        issues.append(Issue(None, "artifacts/", "corrupt", str(e)))
        return
    for rid in sorted(folders - sealed - open_ids):
        issues.append(Issue(None, f"artifacts/{rid}", "orphan", "an artifact folder of no "
                            "record in the ledger (its record was removed, or it was planted)"))


def _open_signed(store: Store, name: str, trust: Trust) -> bool:
    from drkit.evidence.recorder import open_canonical

    try:
        doc = loads_strict(store.read(f"open/{name}"))
        sig = doc["signature"]
        fp = doc["writer"]["key_id"]
        key = trust.keys.get(fp)
        if key is None:
            key = load_public_pem(doc["record"]["signer"]["public_key"].encode())
            if fingerprint(key) != fp or fp not in trust.fingerprints:
                return False
        return verify_signature(key, open_canonical(doc), sig)
    except Exception:  # noqa: BLE001 - anything unreadable is unsigned
        return False


def _anchor(anchor: Any, hashes: dict[int, str], last: int, issues: list[Issue],
            notes: list[str]) -> None:
    got = anchor.read()
    where = anchor.describe()
    for d in got.damaged:
        issues.append(Issue(None, where, "anchor", f"anchor entry unreadable: {d}"))
    ledger_id = hashes.get(1)
    heads = got.heads
    others = [h for h in heads if h.ledger and ledger_id and h.ledger != ledger_id]
    if others:
        issues.append(Issue(1, "?", "anchor", f"the anchor holds {len(others)} head(s) of a "
                            f"ledger whose record #1 is {others[0].ledger[:16]}..., not this "
                            "store's: the ledger was replaced from its first record"))
    latest = max(heads, key=lambda h: h.seq, default=None)
    if latest is None:
        if last:
            notes.append(f"the anchor {where} holds no head yet")
        return
    if last < latest.seq:
        issues.append(Issue(last + 1, "?", "truncated",
                            f"records after #{last} are gone: the anchor {where} holds head "
                            f"#{latest.seq} ({latest.hash[:16]}..., published {latest.time})"))
    for h in sorted(heads, key=lambda h: h.seq):
        have = hashes.get(h.seq)
        if have is not None and have != h.hash:
            issues.append(Issue(h.seq, "?", "anchor", f"the anchor {where} holds hash "
                                f"{h.hash[:16]}... for #{h.seq}, the store {have[:16]}...: "
                                "history was rewritten after it was anchored"))
    if last > latest.seq:
        notes.append(f"records #{latest.seq + 1}-#{last} are not anchored yet (the anchor's "
                     f"head is #{latest.seq})")


def _s3_versions(store: Any, files: list[ledger.RecordFile], checked: dict[int, _Checked],
                 issues: list[Issue]) -> None:
    """On S3: one version per record, locked in COMPLIANCE until at least its retention date."""
    from datetime import UTC, datetime

    versions = store.versions("records")
    for f in files:
        n = versions.get(f.name, 0)
        if n != 1:
            issues.append(Issue(f.seq, f.id, "s3-version", f"{n} object versions of "
                                f"records/{f.name} (a sealed record has exactly one: a later "
                                "PutObject replaced what drkit reads)"))
        mode, until = store.retention(f"records/{f.name}")
        c = checked.get(f.seq)
        need = None
        if c is not None and c.ended_at and c.retention_days is not None:
            need = parse_time(c.ended_at) + timedelta(days=c.retention_days) - timedelta(days=1)
        if mode != "COMPLIANCE":
            issues.append(Issue(f.seq, f.id, "s3-lock", f"records/{f.name} is not locked in "
                                f"COMPLIANCE mode ({mode or 'no lock'}): it can be deleted"))
        elif until is None or (need is not None and until < need) or \
                until < datetime.now(UTC):
            issues.append(Issue(f.seq, f.id, "s3-lock", f"records/{f.name} is locked only until "
                                f"{until} (retention {c.retention_days if c else '?'} days "
                                "from the record's end)"))


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
