"""The shared state's objects in S3, written with conditional requests (issue 18).

boto3 is imported here only (the state's one door to AWS), late, so `drkit --help` stays fast.
Every write is conditional: `If-None-Match: *` creates an object only if it does not exist,
`If-Match: <ETag>` replaces it only if nobody changed it since it was read (S3 has supported
both on PutObject since 2024; moto 5.2 implements them: tests/remote). A refused condition is
`Conflict`; anything else the bucket says is an EnvironmentProblem naming the bucket (exit 3).
"""

from __future__ import annotations

from typing import Any

from drkit.errors import EnvironmentProblem


class Conflict(Exception):
    """A conditional write lost: the object exists (create) or changed (replace)."""


class S3Blobs:
    """Small JSON documents under s3://bucket/prefix, read with their ETag."""

    def __init__(self, bucket: str, prefix: str = "", *, region: str | None = None,
                 endpoint_url: str | None = None, client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.region = region
        self.endpoint_url = endpoint_url
        self._client = client

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3  # the shared state's one door to boto3, opened late
            from botocore.config import Config

            self._client = boto3.client(
                "s3", region_name=self.region, endpoint_url=self.endpoint_url or None,
                # A controller must learn fast that the state is unreachable; boto3's default
                # retries would hold a lease decision for a minute.
                config=Config(connect_timeout=5, read_timeout=15,
                              retries={"max_attempts": 3, "mode": "standard"}))
        return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _problem(self, e: Exception, what: str) -> EnvironmentProblem:
        code = _code(e)
        hint = {"NoSuchBucket": "create the bucket (or fix environments.*.state.s3 in the plan)",
                "AccessDenied": "give this controller s3:GetObject/PutObject/ListBucket on it"
                }.get(code or "", "check the bucket, the credentials and the endpoint")
        return EnvironmentProblem(f"shared state {self.url}: cannot {what}: {code or e}; {hint}")

    def get(self, key: str) -> tuple[bytes, str] | None:
        """(body, ETag), or None when there is no such object."""
        try:
            r = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            return r["Body"].read(), r["ETag"]
        except Exception as e:
            if _code(e) in ("NoSuchKey", "404"):
                return None
            raise self._problem(e, f"read {key}") from e

    def create(self, key: str, data: bytes) -> str:
        """Write `key` only if it does not exist yet; its ETag. Conflict when it exists."""
        return self._put(key, data, IfNoneMatch="*")

    def replace(self, key: str, data: bytes, etag: str) -> str:
        """Write `key` only if its ETag is still `etag`; the new ETag. Conflict otherwise."""
        return self._put(key, data, IfMatch=etag)

    def _put(self, key: str, data: bytes, **cond: str) -> str:
        try:
            r = self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data,
                                       ContentType="application/json", **cond)
            return str(r["ETag"])
        except Exception as e:
            # 412: the condition failed; 409: a concurrent conditional write to the same key
            # was in flight (S3 asks to retry; for us it is the same lost race).
            if _code(e) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                raise Conflict(key) from e
            raise self._problem(e, f"write {key}") from e

    def list(self, prefix: str) -> list[str]:
        """Keys under `prefix` (relative to the state's prefix), sorted."""
        out: list[str] = []
        base = self._key(prefix)
        strip = len(self._key("")) if self.prefix else 0
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base)
            for page in pages:
                out += [o["Key"][strip:] for o in page.get("Contents", [])]
        except Exception as e:
            raise self._problem(e, f"list {prefix}") from e
        return sorted(out)


def _code(e: Exception) -> str | None:
    response = getattr(e, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code") or "") or None
    return None
