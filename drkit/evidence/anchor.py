"""Anchors: the chain head published outside the store, so history cannot be cut from the end.

Each seal publishes the new head (sequence number, record hash, record id, the ledger's id and
the time) to the plan's `evidence.anchor`:

- a local append-only file (the lab default): one JSON line per seal, opened O_APPEND. On a
  real host put it where the drill operator cannot rewrite it (another machine's share, a
  `chattr +a` file owned by another user); on the drill host itself it only proves something
  against people who can write the store but not that file.
- `s3://bucket/prefix`: one object per seal, `<prefix>/<seq:08d>-<hash>.json`, put with
  If-None-Match and COMPLIANCE Object Lock in a bucket that should live in another account and
  region than the store: nobody, the root account included, can remove a head before the
  retention date.

A ledger's id is the hash of its record #1; an anchor serves one store. `verify` compares the
store with the highest head anchored: a store that ends before it lost records ("records after
#N are gone"), and a store whose record at an anchored sequence number has another hash was
rewritten.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drkit.errors import BadInput, RunFailed

if TYPE_CHECKING:
    from drkit.config import Plan

MAX_ANCHOR_BYTES = 64 * 1024 * 1024
_S3_KEY = re.compile(r"(\d{8,})-([0-9a-f]{64})\.json\Z")


@dataclass(frozen=True)
class Head:
    seq: int
    hash: str
    record: str  # the record id
    ledger: str  # hash of record #1 (the ledger's id)
    time: str  # when it was published (UTC)

    def line(self) -> bytes:
        from drkit.evidence.jcs import canonicalize

        return canonicalize(asdict(self)) + b"\n"

    @classmethod
    def parse(cls, d: Any) -> Head:
        if not isinstance(d, dict):
            raise ValueError("not an object")
        seq, h = d.get("seq"), d.get("hash")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1 \
                or not isinstance(h, str) or len(h) != 64:
            raise ValueError("no valid seq and hash")
        return cls(seq, h, str(d.get("record", "")), str(d.get("ledger", "")),
                   str(d.get("time", "")))


@dataclass(frozen=True)
class Heads:
    """What an anchor holds: the heads it could read, and lines it could not."""

    heads: tuple[Head, ...]
    damaged: tuple[str, ...] = ()

    @property
    def latest(self) -> Head | None:
        return max(self.heads, key=lambda h: h.seq, default=None)


class Anchor(ABC):
    url: str

    @abstractmethod
    def publish(self, head: Head) -> None:
        """Record a new head (never rewrites an earlier one)."""

    @abstractmethod
    def read(self) -> Heads:
        """Every head published so far."""

    def describe(self) -> str:
        return self.url


class FileAnchor(Anchor):
    def __init__(self, path: Path) -> None:
        self.path = Path(os.path.abspath(path))
        self.url = str(self.path)

    def publish(self, head: Head) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, head.line())
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise RunFailed(f"evidence anchor {self.path}: cannot append: {e.strerror}") from e

    def read(self) -> Heads:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return Heads(())
        except OSError as e:
            return Heads((), (f"cannot be read: {e.strerror}",))
        try:
            with os.fdopen(fd, "rb") as f:
                raw = f.read(MAX_ANCHOR_BYTES + 1)
        except OSError as e:
            return Heads((), (f"cannot be read: {e.strerror}",))
        from drkit.evidence.jcs import loads_strict

        heads, damaged = [], []
        for i, line in enumerate(raw.split(b"\n"), 1):
            if not line.strip():
                continue
            try:
                heads.append(Head.parse(loads_strict(line)))
            except (ValueError, RecursionError) as e:
                damaged.append(f"line {i}: {str(e)[:80]}")
        return Heads(tuple(heads), tuple(damaged))


class S3Anchor(Anchor):
    def __init__(self, bucket: str, prefix: str, *, retention_s: float | None,
                 endpoint_url: str | None = None, region: str | None = None,
                 client: Any = None) -> None:
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.retention_s = retention_s
        self.endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
        self.region = region
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("s3", endpoint_url=self.endpoint_url or None,
                                        region_name=self.region)
        return self._client

    def _key(self, head: Head) -> str:
        name = f"{head.seq:08d}-{head.hash}.json"
        return f"{self.prefix}/{name}" if self.prefix else name

    def publish(self, head: Head) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(head),
                                "Body": head.line(), "IfNoneMatch": "*",
                                "ContentType": "application/json"}
        if self.retention_s:
            args["ObjectLockMode"] = "COMPLIANCE"
            args["ObjectLockRetainUntilDate"] = datetime.now(UTC) + timedelta(
                seconds=self.retention_s)
        try:
            self.client.put_object(**args)
        except (ClientError, BotoCoreError) as e:
            raise RunFailed(f"evidence anchor {self.url}: cannot publish head #{head.seq}: "
                            f"{e}") from None

    def read(self) -> Heads:
        from botocore.exceptions import BotoCoreError, ClientError

        base = f"{self.prefix}/" if self.prefix else ""
        heads, damaged = [], []
        try:
            pages = self.client.get_paginator("list_object_versions").paginate(
                Bucket=self.bucket, Prefix=base)
            for page in pages:
                for v in page.get("Versions", ()):
                    m = _S3_KEY.match(v["Key"][len(base):])
                    if not m:
                        damaged.append(f"{v['Key']}: not a head object")
                        continue
                    # The key names the head; its body repeats it (read only when needed).
                    heads.append(Head(int(m.group(1)), m.group(2), "", "",
                                      v["LastModified"].astimezone(UTC).isoformat()))
                for d in page.get("DeleteMarkers", ()):
                    damaged.append(f"{d['Key']}: a delete marker hides a head")
        except (ClientError, BotoCoreError) as e:
            return Heads((), (f"cannot be listed: {e}",))
        return Heads(tuple(heads), tuple(damaged))


def open_anchor(url: str | None, *, plan: Plan | None = None) -> Anchor | None:
    """The anchor a URL names (or the plan's evidence.anchor); None when there is none."""
    ev = plan.model.evidence if plan is not None else None
    url = url or (ev.anchor if ev else None)
    if not url:
        return None
    if url.startswith("s3://"):
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise BadInput(f"evidence anchor {url!r}: no bucket (use s3://bucket/prefix)")
        return S3Anchor(bucket, prefix, retention_s=ev.retention if ev else None)
    if "://" in url:
        raise BadInput(f"evidence anchor {url!r}: unknown scheme (use a file or s3://)")
    return FileAnchor(plan.resolve(url) if plan is not None else Path(url).expanduser())


def anchor_for(store: Any, plan: Plan | None) -> Anchor | None:
    """The plan's anchor, for the plan's own store only: an anchor serves one ledger, so a run
    or a verify on another store (`--store`) publishes to, and checks against, no anchor."""
    if plan is None or not plan.model.evidence.anchor:
        return None
    from drkit.evidence.locator import open_store

    if open_store(None, plan=plan).describe() != store.describe():
        return None
    return open_anchor(None, plan=plan)


def head_of(rec_seq: int, rec_hash: str, rec_id: str, ledger: str) -> Head:
    from drkit.evidence.record import utc

    return Head(rec_seq, rec_hash, rec_id, ledger, utc(datetime.now(UTC)) or "")
