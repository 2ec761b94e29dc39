"""RFC 3161 time stamps from a local TSA (openssl ts), kept with the record, checked offline."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from drkit.config import Plan, load_plan
from drkit.evidence import tsa, verify
from drkit.evidence.store import record_key

from .conftest import PLAN, seal_one
from .tsa_server import TSA

SCRIPT = Path(__file__).resolve().parents[2] / "drkit-verify"


@pytest.fixture
def local_tsa(tmp_path):
    t = TSA(tmp_path / "tsa")
    try:
        yield t
    finally:
        t.close()


@pytest.fixture
def tsa_plan(plan: Plan, local_tsa: TSA) -> Plan:
    plan.path.write_text(PLAN.replace("  retention: 1d\n", f"  retention: 1d\n  tsa_url: "
                                      f"{local_tsa.url}\n  tsa_ca: {local_tsa.ca}\n"))
    return load_plan(plan.path)


def test_each_seal_is_time_stamped_and_checked_offline(store, tsa_plan, keys, local_tsa,
                                                       tmp_path):
    rec = seal_one(store, tsa_plan, tmp_path)
    assert local_tsa.requests == 1 and rec.timestamp
    assert tsa.verify(rec.timestamp, rec.hash, local_tsa.ca) is None
    assert tsa.gen_time(rec.timestamp)  # openssl reads the time out of the token
    # Offline: the TSA is gone, the token and the CA certificate are enough.
    local_tsa.close()
    report = verify(store, keys.public, tsa_ca=local_tsa.ca)
    assert report.ok, report.issues
    path = store.root / record_key(rec.seq, rec.id)
    token = tmp_path / "token.tsr"
    token.write_bytes(base64.b64decode(json.loads(path.read_text())["timestamp"]))
    out = subprocess.run(["openssl", "ts", "-verify", "-digest", rec.hash, "-in", str(token),
                          "-CAfile", str(local_tsa.ca)], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0 and "Verification: OK" in out.stdout
    got = subprocess.run([sys.executable, str(SCRIPT), str(store.root), "--public-key",
                          str(keys.public), "--tsa-ca", str(local_tsa.ca)],
                         capture_output=True, text=True, check=False)
    assert got.returncode == 0, got.stdout + got.stderr


def test_a_token_for_another_hash_fails(store, tsa_plan, keys, local_tsa, tmp_path):
    a = seal_one(store, tsa_plan, tmp_path)
    b = seal_one(store, tsa_plan, tmp_path)
    # Swap the tokens: each is a valid token, of the other record's hash. The token is not
    # part of the hashed bytes, so the records still verify: only the time stamp check fails.
    pa, pb = (store.root / record_key(r.seq, r.id) for r in (a, b))
    da, db = json.loads(pa.read_text()), json.loads(pb.read_text())
    da["timestamp"], db["timestamp"] = db["timestamp"], da["timestamp"]
    pa.write_text(json.dumps(da))
    pb.write_text(json.dumps(db))
    assert verify(store, keys.public).ok  # without the CA, nothing checks the tokens
    report = verify(store, keys.public, tsa_ca=local_tsa.ca)
    assert [i.kind for i in report.issues] == ["timestamp", "timestamp"]
    got = subprocess.run([sys.executable, str(SCRIPT), str(store.root), "--public-key",
                          str(keys.public), "--tsa-ca", str(local_tsa.ca)],
                         capture_output=True, text=True, check=False)
    assert got.returncode == 1 and got.stdout.count(": timestamp: ") == 2


def test_an_unreachable_tsa_leaves_a_sealed_record_and_a_warning(store, plan, keys, tmp_path):
    plan.path.write_text(PLAN.replace("  retention: 1d\n", "  retention: 1d\n  tsa_url: "
                                      "http://127.0.0.1:9/tsa\n"))
    p = load_plan(plan.path)
    from drkit.evidence import Recorder

    rec = Recorder.open(store, kind="runbook", name="patch", environment="lab", plan=p)
    rec.add_phase("patch", status="ok", started_at="2025-03-01T02:00:00Z",
                  ended_at="2025-03-01T02:00:01Z")
    sealed = rec.seal("pass")
    assert sealed.timestamp is None and sealed.seq == 1
    assert any("without an RFC 3161 time stamp" in w for w in rec.warnings)
    assert verify(store, keys.public).ok
