"""The evidence record (schema_version 2; version 1 is still read) and its canonical form.

A record is a frozen dataclass tree. `to_dict()` gives the JSON object written to the store;
`canonical_bytes()` gives the bytes that are hashed and signed: the record without its
unsigned members (`hash`, `signature`, `timestamp`), in

- schema_version 2: RFC 8785 (JSON Canonicalization Scheme), see drkit.evidence.jcs;
- schema_version 1 (records written before): Python's
  `json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)` in UTF-8.

Every duration drkit controls is an integer number of milliseconds and every time is a UTC
string with millisecond precision (`2025-03-01T02:14:07.123Z`), so the canonical form has no
floats an auditor's tools could print differently. Free-form sections (`reconciliation`) round
floats to 3 decimals; Python's shortest round-trip float repr is then stable under
`json.load` + `json.dumps`, which is what the documented verification recipe uses.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from drkit.errors import BadInput

SCHEMA_VERSION = 2  # what new records are written in
SCHEMA_VERSIONS = (1, 2)  # what verify reads, each with its own canonical form
UNSIGNED = ("hash", "signature", "timestamp")  # members outside the canonical bytes
GENESIS = "0" * 64  # prev_hash of the first record of a ledger
REDACTED = "[REDACTED]"

# JSON as it comes from json.loads: used only for the free-form parts (reconciliation).
JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]


class Kind(StrEnum):
    DRILL = "drill"
    RUNBOOK = "runbook"


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"  # something the verdict needs was not observed (issue 11)
    ABORTED = "aborted"
    INTERRUPTED = "interrupted"
    RUNNING = "running"  # only ever in an open record, never in a sealed one


class Severity(StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"


class Status(StrEnum):
    """Status of a phase, task or smoke flow."""

    OK = "ok"
    CHANGED = "changed"
    FAILED = "failed"
    SKIPPED = "skipped"
    UNREACHABLE = "unreachable"
    ABORTED = "aborted"
    RUNNING = "running"
    INTERRUPTED = "interrupted"


def utc(dt: datetime | str | None) -> str | None:
    """A UTC ISO-8601 string with millisecond precision: '2025-03-01T02:14:07.123Z'."""
    if dt is None:
        return None
    if isinstance(dt, str):
        dt = parse_time(dt)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_time(value: str) -> datetime:
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def ms(seconds: float | int | None) -> int | None:
    """Seconds -> integer milliseconds (None stays None; NaN/inf are not durations)."""
    if seconds is None or isinstance(seconds, bool):
        return None
    seconds = float(seconds)
    if not math.isfinite(seconds):
        return None
    return round(seconds * 1000)


def between_ms(start: str | None, end: str | None) -> int | None:
    if not start or not end:
        return None
    return round((parse_time(end) - parse_time(start)).total_seconds() * 1000)


def json_safe(value: Any) -> JsonValue:
    """Free-form data made canonical-safe: floats rounded to 3 decimals, no NaN, str keys."""
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return value
    if isinstance(value, float):
        return round(value, 3) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    if isinstance(value, datetime):
        return utc(value)
    if isinstance(value, StrEnum):
        return str(value)
    return str(value)


@dataclass(frozen=True)
class Task:
    play: str
    task: str
    host: str
    status: Status
    started_at: str | None
    ended_at: str | None
    duration_ms: int | None
    message: str = ""


@dataclass(frozen=True)
class Phase:
    name: str
    status: Status
    started_at: str | None
    ended_at: str | None
    duration_ms: int | None
    counts_for_rto: bool = False
    playbook: str | None = None
    message: str = ""
    tasks: tuple[Task, ...] = ()


@dataclass(frozen=True)
class Clock:
    """The recovery clock: from the fault to the first moment all smoke flows pass.

    The sources say how each time was obtained (issue 19: the fault step's own time, or the
    phase start it fell back to; the smoke round that went green), with the canary's first
    failed request it was checked against. Absent (None) in records written before them, and
    then left out of the record, so those records keep their canonical form."""

    started_at: str | None = None
    stopped_at: str | None = None
    started_source: str | None = None
    stopped_source: str | None = None
    canary_first_failure_at: str | None = None


CLOCK_OPTIONAL = ("started_source", "stopped_source", "canary_first_failure_at")


@dataclass(frozen=True)
class Target:
    service: str
    rto_target_ms: int | None = None
    rto_measured_ms: int | None = None
    rto_met: bool | None = None
    rpo_target_ms: int | None = None
    rpo_measured_ms: int | None = None
    rpo_met: bool | None = None
    lost_payments: int | None = None


@dataclass(frozen=True)
class Smoke:
    flow: str
    status: Status
    duration_ms: int | None = None
    message: str = ""


@dataclass(frozen=True)
class Finding:
    severity: Severity
    check: str
    detail: str = ""
    owner: str | None = None  # v2: who must fix it (the service owner from the plan)
    due: str | None = None  # v2: by when (UTC date, from the plan's policy.finding_due)


@dataclass(frozen=True)
class Artifact:
    name: str
    sha256: str
    size: int


@dataclass(frozen=True)
class FileDigest:
    path: str
    sha256: str


@dataclass(frozen=True)
class Git:
    commit: str | None = None
    dirty: bool | None = None


@dataclass(frozen=True)
class Redacted:
    """One redaction: where (record section or artifact), by which rule, how often, which keys.

    Keys are named, values never are.
    """

    where: str
    rule: str
    count: int
    keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class Redaction:
    rules: tuple[str, ...]
    applied: tuple[Redacted, ...] = ()
    note: str = ("Values of Ansible no_log tasks are censored by Ansible before drkit sees them "
                 "and stay censored.")


@dataclass(frozen=True)
class Regions:
    primary: str | None = None
    secondary: str | None = None


@dataclass(frozen=True)
class Identity:
    """Who ran drkit. `source` says how it is known: `aws-sts` (the caller identity ARN of the
    AWS credentials the run used: established by AWS) or `os-user` (the OS account, with
    $DRKIT_OPERATOR as given: self-asserted, nothing checked it)."""

    name: str
    source: str
    self_asserted: bool
    os_user: str | None = None
    aws_arn: str | None = None


@dataclass(frozen=True)
class Canary:
    """The RPO canary's figures: payments acknowledged, write attempts that failed, and
    acknowledged payments missing after failover."""

    acknowledged: int | None = None
    failed: int | None = None
    lost: int | None = None


@dataclass(frozen=True)
class Approval:
    request_id: str | None = None
    requested_by: str | None = None
    approved_by: str | None = None
    approved_at: str | None = None


@dataclass(frozen=True)
class SignerInfo:
    """The key that signed a v2 record: its algorithm, fingerprint and public key (PEM).

    The public key is carried for convenience only: verify trusts a record because the
    fingerprint of this key is pinned (plan or --trust), never because the key is here."""

    type: str  # file (an Ed25519 key file) or aws-kms
    algorithm: str  # ed25519 or ecdsa-p256-sha256
    key_id: str  # SHA-256 (hex) of the DER SubjectPublicKeyInfo
    public_key: str
    kms_key: str | None = None  # the KMS key ARN


# Top-level members only schema_version 2 has, and the Finding members it added.
V2_ONLY = ("regions", "target_type", "operator_identity", "canary", "approvals", "signer",
           "timestamp")
FINDING_V2 = ("owner", "due")


@dataclass(frozen=True)
class Record:
    schema_version: int
    id: str
    seq: int | None
    kind: Kind
    name: str
    scenario_type: str | None
    environment: str
    operator: str
    approved_by: str | None
    change_id: str | None
    host: str
    pid: int
    started_at: str
    ended_at: str | None
    duration_ms: int | None
    verdict: Verdict
    clock: Clock
    targets: tuple[Target, ...]
    phases: tuple[Phase, ...]
    smoke: tuple[Smoke, ...]
    reconciliation: JsonValue
    findings: tuple[Finding, ...]
    git: Git
    files: tuple[FileDigest, ...]
    versions: dict[str, str]
    plan_name: str | None
    plan_sha256: str | None
    retention_class: str
    retention_days: int | None
    controls: tuple[str, ...]
    redaction: Redaction
    artifacts: tuple[Artifact, ...]
    key_id: str | None
    prev_hash: str | None
    hash: str | None = None
    signature: str | None = None
    # schema_version 2
    regions: Regions | None = None
    target_type: str | None = None
    operator_identity: Identity | None = None
    canary: Canary | None = None
    approvals: tuple[Approval, ...] = ()
    signer: SignerInfo | None = None
    timestamp: str | None = None  # RFC 3161 TimeStampResp (DER, base64) over `hash`

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in CLOCK_OPTIONAL:
            if d["clock"].get(k) is None:
                d["clock"].pop(k, None)
        if self.schema_version == 1:
            for k in V2_ONLY:
                d.pop(k, None)
            for f in d["findings"]:
                for k in FINDING_V2:
                    f.pop(k, None)
        elif d.get("timestamp") is None:
            d.pop("timestamp", None)  # absent until the TSA answered (or none is configured)
        return d

    def canonical_bytes(self) -> bytes:
        return canonical(self.to_dict())

    @property
    def rto_budget_ms(self) -> int | None:
        budgets = [t.rto_target_ms for t in self.targets if t.rto_target_ms is not None]
        return min(budgets) if budgets else None

    @property
    def rto_measured_ms(self) -> int | None:
        got = [t.rto_measured_ms for t in self.targets if t.rto_measured_ms is not None]
        return max(got) if got else None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Record:
        """Rebuild a record read from a store. Raises BadInput when it is not a v1/v2 record."""
        try:
            version = d.get("schema_version")
            if version not in SCHEMA_VERSIONS or isinstance(version, bool):
                raise ValueError(f"schema_version {version!r} (this drkit reads 1 and 2)")
            red = d["redaction"]
            v2: dict[str, Any] = {}
            if version == 2:
                ident, canary, signer = d.get("operator_identity"), d.get("canary"), d["signer"]
                v2 = {"regions": Regions(**d["regions"]) if d.get("regions") else None,
                      "target_type": d.get("target_type"),
                      "operator_identity": Identity(**ident) if ident else None,
                      "canary": Canary(**canary) if canary else None,
                      "approvals": tuple(Approval(**a) for a in d.get("approvals", ())),
                      "signer": SignerInfo(**signer) if signer else None,
                      "timestamp": d.get("timestamp")}
            return cls(
                schema_version=d["schema_version"], id=d["id"], seq=d["seq"],
                kind=Kind(d["kind"]), name=d["name"], scenario_type=d.get("scenario_type"),
                environment=d["environment"], operator=d["operator"],
                approved_by=d.get("approved_by"), change_id=d.get("change_id"),
                host=d["host"], pid=d["pid"], started_at=d["started_at"],
                ended_at=d.get("ended_at"), duration_ms=d.get("duration_ms"),
                verdict=Verdict(d["verdict"]), clock=Clock(**d["clock"]),
                targets=tuple(Target(**t) for t in d["targets"]),
                phases=tuple(
                    Phase(**{**p, "status": Status(p["status"]),
                             "tasks": tuple(Task(**{**t, "status": Status(t["status"])})
                                            for t in p["tasks"])})
                    for p in d["phases"]
                ),
                smoke=tuple(Smoke(**{**s, "status": Status(s["status"])}) for s in d["smoke"]),
                reconciliation=d.get("reconciliation"),
                findings=tuple(Finding(**{**f, "severity": Severity(f["severity"])})
                               for f in d["findings"]),
                git=Git(**d["git"]),
                files=tuple(FileDigest(**f) for f in d["files"]),
                versions=dict(d["versions"]),
                plan_name=d.get("plan_name"), plan_sha256=d.get("plan_sha256"),
                retention_class=d["retention_class"], retention_days=d.get("retention_days"),
                controls=tuple(d["controls"]),
                redaction=Redaction(
                    rules=tuple(red["rules"]),
                    applied=tuple(Redacted(**{**a, "keys": tuple(a.get("keys", ()))})
                                  for a in red["applied"]),
                    note=red.get("note", ""),
                ),
                artifacts=tuple(Artifact(**a) for a in d["artifacts"]),
                key_id=d.get("key_id"), prev_hash=d.get("prev_hash"),
                hash=d.get("hash"), signature=d.get("signature"), **v2,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            rid = d.get("id", "?") if isinstance(d, Mapping) else "?"
            raise BadInput(f"record {rid}: not a valid schema_version "
                           f"{d.get('schema_version') if isinstance(d, Mapping) else '?'} "
                           f"record ({e})") from None


# Top-level fields per schema version: verify reports anything else as unexpected.
FIELDS_V2 = frozenset(Record.__dataclass_fields__)
FIELDS_V1 = FIELDS_V2 - frozenset(V2_ONLY)
FIELDS = {1: FIELDS_V1, 2: FIELDS_V2}


def _py_canonical(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def canonical(d: Mapping[str, Any]) -> bytes:
    """The canonical bytes of a record dict (its unsigned members left out), in the form of
    its schema_version: RFC 8785 for 2, Python's sorted compact JSON for 1."""
    body = {k: v for k, v in d.items() if k not in UNSIGNED}
    if d.get("schema_version") == 1:
        return _py_canonical(body)
    from drkit.evidence.jcs import canonicalize

    return canonicalize(body)


def record_file_bytes(rec: Record) -> bytes:
    """What a record file holds: the canonical JSON of the WHOLE record (unsigned members
    included, in their sorted places) and a newline. Removing the `"hash":"...",`,
    `"signature":"...",` and `"timestamp":"...",` members from it gives the canonical bytes
    again, which lets verify skip re-encoding (see verify.py); any JSON layout of the same
    content still verifies."""
    d = rec.to_dict()
    if rec.schema_version == 1:
        return _py_canonical(d) + b"\n"
    from drkit.evidence.jcs import canonicalize

    return canonicalize(d) + b"\n"


def digest(canon: bytes) -> str:
    return hashlib.sha256(canon).hexdigest()


@dataclass(frozen=True)
class IndexEntry:
    """One line of index.jsonl: enough for `evidence list` without opening records."""

    seq: int
    id: str
    kind: str
    name: str
    environment: str
    verdict: str
    started_at: str
    ended_at: str | None
    operator: str
    change_id: str | None
    rto_ms: int | None
    hash: str

    @classmethod
    def of(cls, r: Record) -> IndexEntry:
        assert r.seq is not None and r.hash is not None
        return cls(seq=r.seq, id=r.id, kind=str(r.kind), name=r.name,
                   environment=r.environment, verdict=str(r.verdict), started_at=r.started_at,
                   ended_at=r.ended_at, operator=r.operator, change_id=r.change_id,
                   rto_ms=r.rto_measured_ms, hash=r.hash)

    def line(self) -> bytes:
        return (json.dumps(asdict(self), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                + "\n").encode("utf-8")

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> IndexEntry:
        return cls(seq=int(d["seq"]), id=str(d["id"]), kind=str(d["kind"]), name=str(d["name"]),
                   environment=str(d["environment"]), verdict=str(d["verdict"]),
                   started_at=str(d["started_at"]), ended_at=d.get("ended_at"),
                   operator=str(d.get("operator", "")), change_id=d.get("change_id"),
                   rto_ms=d.get("rto_ms"), hash=str(d["hash"]))
