"""The S3 store against a real moto server: Object Lock retention, deletes refused."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drkit.errors import EnvironmentProblem
from drkit.evidence import Recorder, open_store, read_index, verify

from .conftest import seal_one

MOTO = Path(sys.executable).parent / "moto_server"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto_url():
    # moto[server] is a dependency of drkit: its absence is a broken install, not a skip.
    assert MOTO.exists(), f"{MOTO} is missing: run scripts/install"
    port = _free_port()
    proc = subprocess.Popen([str(MOTO), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("moto_server did not start")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def s3env(moto_url, monkeypatch):
    for k, v in {"AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing",
                 "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    import boto3

    return boto3.client("s3", endpoint_url=moto_url)


def test_records_and_artifacts_are_locked_for_the_retention(s3env, plan, keys, tmp_path):
    s3 = s3env
    s3.create_bucket(Bucket="dr-evidence", ObjectLockEnabledForBucket=True)
    store = open_store("s3://dr-evidence/payments", plan=plan)  # plan retention: 1d
    before = datetime.now(UTC)
    recs = [seal_one(store, plan, tmp_path) for _ in range(2)]
    report = verify(store, keys.public)
    assert report.ok, report.issues
    assert report.records == 2 and [e.seq for e in read_index(store)] == [1, 2]

    rkey = f"payments/records/{2:08d}-{recs[1].id}.json"
    akey = f"payments/artifacts/{recs[1].id}/summary.json"
    for key in (rkey, akey):
        head = s3.head_object(Bucket="dr-evidence", Key=key)
        assert head["ObjectLockMode"] == "COMPLIANCE"
        until = head["ObjectLockRetainUntilDate"]
        assert before + timedelta(hours=23) < until < datetime.now(UTC) + timedelta(days=1,
                                                                                     minutes=5)
        with pytest.raises(Exception, match="AccessDenied|Access Denied"):
            s3.delete_object(Bucket="dr-evidence", Key=key, VersionId=head["VersionId"])
        assert s3.head_object(Bucket="dr-evidence", Key=key)["VersionId"] == head["VersionId"]
    # Nothing is left open, and open records carried no lock (they had to be deletable).
    assert store.list("open") == []


def test_tampering_in_s3_is_detected(s3env, plan, keys, tmp_path):
    s3 = s3env
    s3.create_bucket(Bucket="dr-evidence-2", ObjectLockEnabledForBucket=True)
    store = open_store("s3://dr-evidence-2", plan=plan)
    rec = seal_one(store, plan, tmp_path)
    # A locked version cannot be removed, but a new version can hide it from a plain GET:
    # verify reads the current version and sees the change.
    key = f"artifacts/{rec.id}/smoke.stdout"
    s3.put_object(Bucket="dr-evidence-2", Key=key, Body=b"forged")
    assert verify(store, keys.public).first.kind == "artifact-changed"


def test_bucket_without_object_lock_is_refused(s3env, plan):
    s3env.create_bucket(Bucket="no-lock")
    store = open_store("s3://no-lock/x", plan=plan)
    with pytest.raises(EnvironmentProblem, match="does not have Object Lock enabled"):
        Recorder.open(store, kind="runbook", name="patch", environment="lab", plan=plan)


def test_boto3_is_not_imported_by_the_local_path():
    code = ("import sys; from drkit.evidence import open_store, verify, Recorder; "
            "open_store('/tmp/x'); print('boto3' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ}, check=True)
    assert out.stdout.strip() == "False"
