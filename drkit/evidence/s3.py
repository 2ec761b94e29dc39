"""The S3 evidence store: the local layout under a prefix, made WORM by S3 Object Lock.

Records and artifacts are put with ObjectLockMode=COMPLIANCE and RetainUntilDate = now + the
plan's retention, so nobody (root account included) can delete or overwrite them before then.
The bucket must have Object Lock enabled (it can only be enabled when the bucket is created).
index.jsonl and open/ are mutable bookkeeping and carry no lock.

Sealing is serialised by an fcntl lock on this host, and across hosts by conditional puts
(If-None-Match: *) on the record key: two writers can never both claim a sequence number.

boto3 is imported here only, and only when an S3 store is used (`drkit --help` stays fast).
`endpoint_url` (or $AWS_ENDPOINT_URL) points it at another S3, e.g. the lab's moto server.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from drkit import files
from drkit.errors import EnvironmentProblem, RunFailed
from drkit.evidence.store import MAX_RECORD_BYTES, AlreadyExists, FileProblem, Store, check_key


class S3Store(Store):
    def __init__(self, bucket: str, prefix: str = "", *, retention_s: float | None = None,
                 endpoint_url: str | None = None, client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.retention_s = retention_s
        self.endpoint_url = endpoint_url
        self._client = client
        self._lock_checked = False

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3  # the one door to boto3, opened late

            self._client = boto3.client("s3", endpoint_url=self.endpoint_url or None)
        return self._client

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, e: Exception) -> str:
        code = getattr(e, "response", {}).get("Error", {}).get("Code", "")
        return str(code or type(e).__name__)

    def read(self, key: str, *, limit: int | None = MAX_RECORD_BYTES) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            if self._error(e) in ("NoSuchKey", "404", "NotFound"):
                raise FileProblem(key, "missing") from None
            raise FileProblem(key, f"cannot be read: {self._error(e)}") from None
        except BotoCoreError as e:
            raise RunFailed(f"evidence store {self.url}: {e}") from e
        size = obj.get("ContentLength", 0)
        if limit is not None and size > limit:
            obj["Body"].close()
            raise FileProblem(key, f"is {size} bytes, more than a record can be ({limit})")
        return obj["Body"].read()

    def digest(self, key: str) -> tuple[str, int]:
        from botocore.exceptions import ClientError

        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            if self._error(e) in ("NoSuchKey", "404", "NotFound"):
                raise FileProblem(key, "missing") from None
            raise FileProblem(key, f"cannot be read: {self._error(e)}") from None
        h, n = hashlib.sha256(), 0
        for chunk in obj["Body"].iter_chunks(1 << 20):
            h.update(chunk)
            n += len(chunk)
        return h.hexdigest(), n

    def _check_object_lock(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        if self._lock_checked:
            return
        try:
            conf = self.client.get_object_lock_configuration(Bucket=self.bucket)
            enabled = conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
        except ClientError as e:
            enabled = None
            if self._error(e) not in ("ObjectLockConfigurationNotFoundError",):
                raise EnvironmentProblem(f"evidence store {self.url}: cannot read the bucket's "
                                         f"Object Lock configuration: {self._error(e)}") from None
        except BotoCoreError as e:
            raise EnvironmentProblem(f"evidence store {self.url}: {e}") from e
        if enabled != "Enabled":
            raise EnvironmentProblem(
                f"evidence store {self.url}: bucket {self.bucket} does not have Object Lock "
                "enabled, so evidence could be deleted (create the bucket with "
                "--object-lock-enabled-for-bucket)")
        self._lock_checked = True

    def write(self, key: str, data: bytes, *, immutable: bool = True) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key), "Body": data,
                                "ContentType": "application/json" if key.endswith(".json")
                                else "application/octet-stream"}
        self._check_object_lock()  # on the first write, which is the open record: fail early
        if immutable:
            args["IfNoneMatch"] = "*"  # never replace evidence, even as a new version
            if self.retention_s:
                args["ObjectLockMode"] = "COMPLIANCE"
                args["ObjectLockRetainUntilDate"] = (
                    datetime.now(UTC) + timedelta(seconds=self.retention_s))
        try:
            self.client.put_object(**args)
        except ClientError as e:
            if self._error(e) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise AlreadyExists(f"evidence store {self.url}: {key} already exists and "
                                    "evidence is never overwritten") from None
            raise RunFailed(f"evidence store {self.url}: cannot put {key}: "
                            f"{self._error(e)}") from None
        except BotoCoreError as e:
            raise RunFailed(f"evidence store {self.url}: {e}") from e

    def delete_open(self, key: str) -> None:
        if not key.startswith("open/"):
            raise RunFailed(f"evidence store: refusing to delete {key} (only open records go)")
        from botocore.exceptions import ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            raise RunFailed(f"evidence store {self.url}: cannot delete {key}: "
                            f"{self._error(e)}") from None

    def list(self, prefix: str) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        base = self._key(prefix) + "/"
        names = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base, Delimiter="/")
            for page in pages:
                names += [o["Key"][len(base):] for o in page.get("Contents", ())]
        except (ClientError, BotoCoreError) as e:
            raise RunFailed(f"evidence store {self.url}: cannot list {prefix}: "
                            f"{self._error(e)}") from None
        return names

    def _names(self, base: str) -> tuple[set[str], set[str]]:
        """(files, folders) directly under the key prefix `base` (ending in / or empty)."""
        from botocore.exceptions import BotoCoreError, ClientError

        files, folders = set(), set()
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base, Delimiter="/")
            for page in pages:
                files |= {o["Key"][len(base):] for o in page.get("Contents", ())}
                folders |= {p["Prefix"][len(base):].rstrip("/")
                            for p in page.get("CommonPrefixes", ())}
        except (ClientError, BotoCoreError) as e:
            raise RunFailed(f"evidence store {self.url}: cannot list {base or '/'}: "
                            f"{self._error(e)}") from None
        return files, folders

    def list_folders(self, prefix: str) -> set[str]:
        return self._names(self._key(prefix) + "/")[1]

    def top_level(self) -> set[str]:
        files, folders = self._names(f"{self.prefix}/" if self.prefix else "")
        return files | folders

    def versions(self, prefix: str) -> dict[str, int]:
        """Object versions (delete markers included) per name under a folder key."""
        from botocore.exceptions import BotoCoreError, ClientError

        base = self._key(prefix) + "/"
        out: dict[str, int] = {}
        try:
            for page in self.client.get_paginator("list_object_versions").paginate(
                    Bucket=self.bucket, Prefix=base):
                for v in [*page.get("Versions", ()), *page.get("DeleteMarkers", ())]:
                    name = v["Key"][len(base):]
                    out[name] = out.get(name, 0) + 1
        except (ClientError, BotoCoreError) as e:
            raise RunFailed(f"evidence store {self.url}: cannot list versions of {prefix}: "
                            f"{self._error(e)}") from None
        return out

    def retention(self, key: str) -> tuple[str | None, datetime | None]:
        """(mode, retain-until) of the object's current version; (None, None) without a lock."""
        from botocore.exceptions import BotoCoreError, ClientError

        # HeadObject carries the lock (with s3:GetObjectRetention); moto 5.2 answers
        # GetObjectRetention with a 500.
        try:
            got = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError):
            return None, None
        until = got.get("ObjectLockRetainUntilDate")
        return got.get("ObjectLockMode"), until.astimezone(UTC) if until else None

    def append_index(self, data: bytes) -> None:
        # S3 has no append: rewrite the (small) index under the seal lock.
        try:
            old = self.read("index.jsonl", limit=None)
        except FileProblem as e:
            if e.reason != "missing":
                raise RunFailed(f"evidence store {self.url}: {e}") from None
            old = b""
        self.write("index.jsonl", old + data, immutable=False)

    @contextmanager
    def lock(self) -> Iterator[None]:
        name = hashlib.sha256(f"{self.endpoint_url}|{self.url}".encode()).hexdigest()[:16]
        path = os.path.join(tempfile.gettempdir(), f"drkit-evidence-{name}.lock")
        with files.locked(path):
            yield
