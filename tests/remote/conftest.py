"""Fixtures for the remote-execution tests (issue 18): a real moto server (the evidence tests'
fixture) holding the shared state's bucket, in a region no drill fails over."""

from __future__ import annotations

import uuid

import pytest

from tests.evidence.test_evidence_s3 import moto_url  # noqa: F401  (the same real moto server)

STATE_REGION = "eu-north-1"


@pytest.fixture
def state_bucket(moto_url, monkeypatch):  # noqa: F811
    """A fresh bucket per test; AWS settings pointing at moto."""
    for k, v in {"AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing",
                 "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": STATE_REGION}.items():
        monkeypatch.setenv(k, v)
    import boto3

    name = f"drkit-state-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=moto_url, region_name=STATE_REGION).create_bucket(
        Bucket=name, CreateBucketConfiguration={"LocationConstraint": STATE_REGION})
    return f"s3://{name}/drills"
