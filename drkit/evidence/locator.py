"""Which evidence store a URL names: a local directory, or `s3://bucket/prefix`.

Above both stores (issue 13): store.py defines the interface and the local store, s3.py the S3
store built on that interface, and only this module knows both. (open_store lived in store.py,
which then imported s3.py while s3.py imported store.py.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from drkit.errors import BadInput
from drkit.evidence.store import LocalStore, Store

if TYPE_CHECKING:
    from drkit.config import Plan


def open_store(url_or_path: str | Path | None = None, *, plan: Plan | None = None,
               endpoint_url: str | None = None) -> Store:
    """The store a URL names: `s3://bucket/prefix`, or a local directory (plan-relative).

    With no URL, the plan's `evidence.store` (default ./evidence). S3 retention is the plan's
    `evidence.retention`; `endpoint_url` (or $AWS_ENDPOINT_URL) points boto3 elsewhere.
    """
    ev = plan.model.evidence if plan is not None else None
    url = str(url_or_path) if url_or_path else (ev.store if ev else "./evidence")
    retention = ev.retention if ev else None
    if url.startswith("s3://"):
        from drkit.evidence.s3 import S3Store

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise BadInput(f"evidence store {url!r}: no bucket (use s3://bucket/prefix)")
        return S3Store(bucket, prefix.strip("/"), retention_s=retention,
                       endpoint_url=endpoint_url or os.environ.get("AWS_ENDPOINT_URL"))
    if "://" in url:
        raise BadInput(f"evidence store {url!r}: unknown scheme (use a directory or s3://)")
    # Relative paths are relative to the plan's directory, like every path in the plan (the CLI
    # makes a --store given on the command line absolute first).
    path = plan.resolve(url) if plan is not None else Path(os.path.expanduser(url))
    return LocalStore(path, retention_s=retention)
