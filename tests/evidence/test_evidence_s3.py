"""The S3 store against a real moto server: Object Lock retention, deletes refused."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drkit.config import load_plan
from drkit.errors import EnvironmentProblem
from drkit.evidence import LocalStore, Recorder, open_store, read_index, verify
from drkit.evidence.anchor import open_anchor

from .conftest import seal_one

MOTO = Path(sys.executable).parent / "moto_server"
SCRIPT = Path(__file__).resolve().parents[2] / "drkit-verify"


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


def test_a_second_version_of_a_locked_record_is_reported(s3env, plan, keys, tmp_path):
    s3 = s3env
    s3.create_bucket(Bucket="dr-evidence-3", ObjectLockEnabledForBucket=True)
    store = open_store("s3://dr-evidence-3/p", plan=plan)
    recs = [seal_one(store, plan, tmp_path) for _ in range(2)]
    assert verify(store, keys.public).ok
    key = f"p/records/{1:08d}-{recs[0].id}.json"
    # A plain PutObject on a locked key: S3 keeps the locked version and adds a current one
    # (here the same bytes, so every hash still matches: only the version count tells).
    body = s3.get_object(Bucket="dr-evidence-3", Key=key)["Body"].read()
    s3.put_object(Bucket="dr-evidence-3", Key=key, Body=body)
    report = verify(store, keys.public)
    assert [(i.seq, i.kind) for i in report.issues][:1] == [(1, "s3-version")], report.issues
    assert "2 object versions" in report.first.message
    # The new current version carries no lock either.
    assert any(i.kind == "s3-lock" and i.seq == 1 for i in report.issues)


def test_retention_below_the_floor_is_refused_for_s3(plan):
    from drkit.errors import PlanError

    text = plan.path.read_text().replace("store: ./evidence", "store: s3://b/p").replace(
        "retention: 1d", "retention: 0s")
    plan.path.write_text(text)
    with pytest.raises(PlanError, match="below the floor of 1d"):
        load_plan(plan.path)


def test_s3_anchor_catches_truncation(s3env, plan, keys, tmp_path):
    """The head goes to a separate locked bucket; cutting the store's end is caught."""
    s3 = s3env
    s3.create_bucket(Bucket="dr-store-4", ObjectLockEnabledForBucket=True)
    s3.create_bucket(Bucket="dr-anchor-4", ObjectLockEnabledForBucket=True)
    plan.path.write_text(plan.path.read_text().replace(
        "  retention: 1d\n", "  retention: 1d\n  anchor: s3://dr-anchor-4/heads\n").replace(
        "store: ./evidence", "store: s3://dr-store-4/x"))
    p = load_plan(plan.path)
    store = open_store("s3://dr-store-4/x", plan=p)
    recs = [seal_one(store, p, tmp_path) for _ in range(2)]
    anchor = open_anchor(None, plan=p)
    heads = anchor.read().heads
    assert [(h.seq, h.hash) for h in heads] == [(r.seq, r.hash) for r in recs]
    head = s3.head_object(Bucket="dr-anchor-4", Key=f"heads/{2:08d}-{recs[1].hash}.json")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert verify(store, keys.public, anchor=anchor).ok
    # A delete without a version id is allowed under a lock: it adds a delete marker, and
    # the newest record is gone from every listing and GET.
    s3.delete_object(Bucket="dr-store-4", Key=f"x/records/{2:08d}-{recs[1].id}.json")
    report = verify(store, keys.public, anchor=anchor)
    assert not report.ok
    assert any(i.kind == "truncated" and "records after #1 are gone" in i.message
               for i in report.issues), report.issues


def test_kms_signed_record_verifies_with_openssl_alone(s3env, plan, tmp_path):
    import boto3

    kms = boto3.client("kms")
    key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    text = plan.path.read_text().replace("  signing_key: keys/evidence.key\n",
                                         f"  kms_key: {key['Arn']}\n")
    plan.path.write_text(text)
    p = load_plan(plan.path)
    store = LocalStore(p.root / "evidence")
    rec = seal_one(store, p, tmp_path)
    assert rec.signer.type == "aws-kms" and rec.signer.algorithm == "ecdsa-p256-sha256"
    # The public key, exported once from KMS, is what the auditor gets, with its fingerprint.
    der = tmp_path / "kms.der"
    der.write_bytes(kms.get_public_key(KeyId=key["KeyId"])["PublicKey"])
    pub = tmp_path / "kms.pub"
    subprocess.run(["openssl", "pkey", "-pubin", "-inform", "DER", "-in", str(der), "-out",
                    str(pub)], check=True)
    fp = hashlib.sha256(der.read_bytes()).hexdigest()
    assert fp == rec.key_id
    # openssl alone: the signature (DER) over the record hash's 32 bytes; the hash itself is
    # the SHA-256 of the canonical bytes (RFC 8785 of the record without its hash, signature
    # and timestamp), which drkit-verify recomputes.
    raw = json.loads((store.root / f"records/{1:08d}-{rec.id}.json").read_text())
    sig = tmp_path / "sig.der"
    sig.write_bytes(base64.b64decode(raw.pop("signature")))
    h = raw.pop("hash")
    from drkit.evidence.jcs import canonicalize

    assert hashlib.sha256(canonicalize(raw)).hexdigest() == h
    hash_bin = tmp_path / "hash.bin"
    hash_bin.write_bytes(bytes.fromhex(h))
    out = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(pub), "-signature",
                          str(sig), str(hash_bin)], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and "Verified OK" in out.stdout, out.stdout + out.stderr
    got = subprocess.run([sys.executable, str(SCRIPT), str(store.root), "--trust", fp],
                         capture_output=True, text=True, check=False)
    assert got.returncode == 0, got.stdout + got.stderr
    # Pinned: the record verifies with drkit too, with no key file at all.
    assert verify(store, None, trusted=[fp]).ok


def test_on_an_aws_target_the_operator_is_the_caller_identity(s3env, plan, keys, tmp_path,
                                                               monkeypatch):
    import boto3

    monkeypatch.setenv("DRKIT_OPERATOR", "claims-to-be-the-cfo")
    arn = boto3.client("sts").get_caller_identity()["Arn"]
    store = LocalStore(plan.root / "evidence")
    rec = Recorder.open(store, kind="runbook", name="patch", environment="lab", plan=plan,
                        target_type="aws")
    rec.add_phase("patch", status="ok", started_at="2025-03-01T02:00:00Z",
                  ended_at="2025-03-01T02:00:01Z")
    sealed = rec.seal("pass")
    ident = sealed.operator_identity
    assert sealed.operator == arn and ident.source == "aws-sts" and not ident.self_asserted
    assert ident.aws_arn == arn and sealed.target_type == "aws"
    assert verify(store, keys.public).ok
