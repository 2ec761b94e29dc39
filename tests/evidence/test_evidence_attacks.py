"""Attacks on the evidence store by someone who can write it (issue 15).

Each one succeeded against drkit before schema_version 2 (the verify of commit 145485d
reported `intact`, or sealed the planted record); each must now be reported by drkit's
verify AND by the stand-alone auditor script `drkit-verify` (python3 + openssl), which CI
runs here against drkit's own output and tampered copies of it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from drkit.config import Plan, load_plan
from drkit.evidence import LocalStore, generate_keypair, recover_interrupted, verify
from drkit.evidence.anchor import FileAnchor
from drkit.evidence.record import Record, canonical, digest, record_file_bytes
from drkit.evidence.recorder import signer_info
from drkit.evidence.signing import FileSigner
from drkit.evidence.store import record_key

from .conftest import PLAN, SUMMARY, dead_pid, seal_n, seal_one

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "drkit-verify"


def script(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The auditor script, run both ways it can check signatures: through libcrypto (ctypes)
    in two worker processes, and with the openssl command in one; both must say the same."""
    fast = subprocess.run([sys.executable, str(SCRIPT), str(store), "--jobs", "2", *args],
                          capture_output=True, text=True, timeout=300, check=False)
    cli = subprocess.run([sys.executable, str(SCRIPT), str(store), "--jobs", "1", *args],
                         capture_output=True, text=True, timeout=300, check=False,
                         env={**os.environ, "DRKIT_VERIFY_CLI": "1"})
    assert (fast.returncode, fast.stdout) == (cli.returncode, cli.stdout), (fast, cli)
    return fast


@pytest.fixture
def pinned(plan: Plan) -> Plan:
    """The test plan with its key's fingerprint pinned and an anchor file."""
    fp = FileSigner(plan.root / "keys" / "evidence.key").fingerprint
    text = PLAN.replace("  retention: 1d\n", f"  retention: 1d\n  trusted_keys: [{fp}]\n"
                        "  anchor: ./anchor/heads.jsonl\n")
    plan.path.write_text(text)
    return load_plan(plan.path)


def _fp(p: Plan) -> str:
    return p.model.evidence.trusted_keys[0]


def _check(store: LocalStore, p: Plan, kind: str, *, expect_seq: int | None = None,
           script_args: tuple[str, ...] = ()) -> None:
    """Both verifiers report the attack: drkit's with the kind, the script with exit 1."""
    report = verify(store, None, trusted=p.model.evidence.trusted_keys,
                    anchor=FileAnchor(p.root / "anchor" / "heads.jsonl"), expect_seq=expect_seq)
    assert not report.ok, "the attack went unnoticed"
    assert kind in [i.kind for i in report.issues], report.issues
    got = script(store.root, "--trust", _fp(p), *script_args)
    assert got.returncode == 1, got.stdout + got.stderr
    assert f": {kind}: " in got.stdout, got.stdout


def test_drkit_output_verifies_with_both(store, pinned, tmp_path):
    recs = seal_n(store, pinned, tmp_path, 3)
    report = verify(store, None, trusted=pinned.model.evidence.trusted_keys,
                    anchor=FileAnchor(pinned.root / "anchor" / "heads.jsonl"), expect_seq=3)
    assert report.ok, report.issues
    assert report.pinned and report.head == (3, recs[-1].hash)
    got = script(store.root, "--trust", _fp(pinned), "--anchor",
                 str(pinned.root / "anchor" / "heads.jsonl"), "--expect-seq", "3")
    assert got.returncode == 0, got.stdout + got.stderr
    assert got.stdout == "" and "intact: 3 records" in got.stderr
    # The anchor got one head per seal, in order, naming the ledger by its record #1.
    heads = FileAnchor(pinned.root / "anchor" / "heads.jsonl").read().heads
    assert [(h.seq, h.hash, h.ledger) for h in heads] == [
        (r.seq, r.hash, recs[0].hash) for r in recs]


def _truncate(store: LocalStore, rec) -> None:
    (store.root / record_key(rec.seq, rec.id)).unlink()
    shutil.rmtree(store.root / "artifacts" / rec.id)
    lines = (store.root / "index.jsonl").read_text().splitlines(keepends=True)
    (store.root / "index.jsonl").write_text("".join(lines[:-1]))


def test_truncation_from_the_end_is_caught_by_the_anchor(store, pinned, tmp_path):
    recs = seal_n(store, pinned, tmp_path, 3)
    _truncate(store, recs[2])
    # Without the anchor the shorter ledger is consistent in itself ...
    assert verify(store, None, trusted=pinned.model.evidence.trusted_keys).ok
    # ... the anchor remembers #3.
    _check(store, pinned, "truncated",
           script_args=("--anchor", str(pinned.root / "anchor" / "heads.jsonl")))
    report = verify(store, None, trusted=pinned.model.evidence.trusted_keys,
                    anchor=FileAnchor(pinned.root / "anchor" / "heads.jsonl"))
    assert "records after #2 are gone" in report.first.message


def test_deleting_the_only_record_without_an_anchor_fails_expect_seq(store, plan, keys,
                                                                     tmp_path):
    recs = seal_n(store, plan, tmp_path, 1)
    _truncate(store, recs[0])
    assert verify(store, keys.public).ok  # "intact: 0 records": what an auditor had before
    report = verify(store, keys.public, expect_seq=1)
    assert report.first.kind == "truncated" and "records after #0 are gone" in \
        report.first.message
    got = script(store.root, "--public-key", str(keys.public), "--expect-seq", "1")
    assert got.returncode == 1 and "records after #0 are gone" in got.stdout


def _resign(store: LocalStore, recs: list, signer: FileSigner) -> None:
    """What an attacker with a key of their own does: rewrite every record, sign, chain."""
    prev = "0" * 64
    for r in recs:
        path = store.root / record_key(r.seq, r.id)
        rec = Record.from_dict(json.loads(path.read_text()))
        rec = replace(rec, verdict=rec.verdict, operator="someone-else", prev_hash=prev,
                      key_id=signer.fingerprint, signer=signer_info(signer), hash=None,
                      signature=None, timestamp=None)
        canon = canonical(rec.to_dict())
        rec = replace(rec, hash=digest(canon), signature=signer.sign(canon))
        path.write_bytes(record_file_bytes(rec))
        prev = rec.hash or ""


def test_resigned_with_a_new_key_and_its_own_public_key(store, pinned, tmp_path):
    recs = seal_n(store, pinned, tmp_path, 2)
    new = generate_keypair(tmp_path / "attacker" / "evidence.key")
    _resign(store, recs, FileSigner(new.private))
    # The attacker also replaces the public key beside the plan's signing key.
    shutil.copy(new.public, pinned.root / "keys" / "evidence.pub")
    report = verify(store, pinned.root / "keys" / "evidence.pub",
                    trusted=pinned.model.evidence.trusted_keys)
    assert not report.ok and report.first.kind == "untrusted-key"
    assert any("is not pinned: not trusted" in n for n in report.notes)
    _check(store, pinned, "untrusted-key",
           script_args=("--public-key", str(pinned.root / "keys" / "evidence.pub")))


def test_key_rotation_is_reported(store, pinned, tmp_path):
    seal_n(store, pinned, tmp_path, 1)
    new = generate_keypair(tmp_path / "k2" / "evidence.key")
    seal_one(store, pinned, tmp_path, signing_key_path=new.private)
    # Not pinned yet: the record signed by the new key fails.
    assert verify(store, None, trusted=pinned.model.evidence.trusted_keys).first.kind == \
        "untrusted-key"
    both = [*pinned.model.evidence.trusted_keys, new.fingerprint]
    report = verify(store, None, trusted=both)
    assert report.ok, report.issues
    assert any(n.startswith("key rotation at record #2") for n in report.notes), report.notes
    got = script(store.root, "--trust", both[0], "--trust", both[1])
    assert got.returncode == 0 and "key rotation at record #2" in got.stderr


def test_a_planted_open_record_is_never_sealed(store, pinned, tmp_path):
    recs = seal_n(store, pinned, tmp_path, 1)
    real = FileSigner(pinned.root / "keys" / "evidence.key")
    planted = json.loads((store.root / record_key(1, recs[0].id)).read_text())
    planted.update(id="20250101T000000Z-0badc0de", seq=None, verdict="running",
                   operator="cfo", approved_by="cfo", change_id="CHG-FAKE")
    for k in ("hash", "signature"):
        planted.pop(k)
    doc = {"state": "running", "record": planted,
           "writer": {"pid": dead_pid(), "pid_start": None, "host": __import__(
               "socket").gethostname(), "key_id": real.fingerprint,
               "signing_key": str(pinned.root / "keys" / "evidence.key"),
               "updated_at": "2025-01-01T00:00:00.000Z"}}
    doc["signature"] = base64.b64encode(b"\0" * 64).decode()  # the planter has no key
    (store.root / "open").mkdir(exist_ok=True)
    (store.root / "open" / f"{planted['id']}.json").write_text(json.dumps(doc))
    got = recover_interrupted(store, plan=pinned)
    assert got.sealed == ()
    assert "not signed by the plan's signer" in got.left_open[0]
    _check(store, pinned, "unexpected-file")


def test_duplicate_keys_are_corrupt(store, pinned, tmp_path):
    seal_one(store, pinned, tmp_path)
    summary = {**SUMMARY, "smoke": [{"flow": "refund", "ok": False, "message": "502"}]}
    rec = seal_one(store, pinned, tmp_path, verdict="fail", summary=summary)
    path = store.root / record_key(rec.seq, rec.id)
    raw = path.read_bytes()
    # "verdict":"pass" first, the sealed "verdict":"fail" last: a last-wins parser hashes the
    # sealed content; a first-wins tool shows pass.
    path.write_bytes(raw.replace(b'"verdict":"fail"', b'"verdict":"pass","verdict":"fail"'))
    _check(store, pinned, "corrupt")
    assert "duplicate member name 'verdict'" in str(verify(
        store, None, trusted=pinned.model.evidence.trusted_keys).first)


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_non_finite_numbers_are_corrupt(store, pinned, tmp_path, number):
    # Python reads them (1e400 as inf); RFC 8785 and other tools do not: damage, whatever the
    # hash says.
    rec = seal_one(store, pinned, tmp_path)
    path = store.root / record_key(rec.seq, rec.id)
    raw = path.read_bytes()
    field = f'"duration_ms":{rec.duration_ms},'.encode()
    assert field in raw
    path.write_bytes(raw.replace(field, b'"duration_ms":' + number + b",", 1))
    _check(store, pinned, "corrupt")
    assert "not valid JSON" in str(verify(store, None,
                                          trusted=pinned.model.evidence.trusted_keys).first)


def test_planted_files_and_orphan_folders(store, pinned, tmp_path):
    recs = seal_n(store, pinned, tmp_path, 2)
    (store.root / "artifacts" / recs[0].id / "approval.pdf").write_text("forged")
    _check(store, pinned, "unexpected-file")
    (store.root / "artifacts" / recs[0].id / "approval.pdf").unlink()
    (store.root / "README.txt").write_text("x")
    _check(store, pinned, "unexpected-file")
    (store.root / "README.txt").unlink()
    orphan = store.root / "artifacts" / "20250101T000000Z-0badc0de"
    orphan.mkdir()
    (orphan / "summary.json").write_text("{}")
    _check(store, pinned, "orphan")


@pytest.mark.parametrize("summary,verdict,says", [
    ({**SUMMARY, "rto": {"target_s": 30, "measured_s": 45, "met": True},
      "clock": {"started_at": "2025-03-01T02:00:03Z", "stopped_at": "2025-03-01T02:00:48Z"}},
     "pass", "rto_met is true with 45000 ms measured against a 30000 ms target"),
    (SUMMARY, "fail", "verdict fail with nothing failed"),
    # the clock (its span is the RTO measured) stopped an hour after the last phase ended
    ({**SUMMARY, "clock": {"started_at": "2025-03-01T03:00:00Z",
                           "stopped_at": "2025-03-01T03:00:12.500Z"}},
     "pass", "the recovery clock stops (2025-03-01T03:00:12.500Z) after the last phase ended"),
    ({**SUMMARY, "clock": {"started_at": "2025-03-01T02:00:03Z",
                           "stopped_at": "2025-03-01T02:00:05Z"}},
     "pass", "RTO 12500 ms measured, but the recovery clock ran 2000 ms"),
])
def test_self_contradicting_records_signed_with_the_real_key(store, pinned, tmp_path, summary,
                                                             verdict, says):
    seal_one(store, pinned, tmp_path, verdict=verdict, summary=summary, smoke_s=60)
    _check(store, pinned, "inconsistent")
    assert says in str(verify(store, None, trusted=pinned.model.evidence.trusted_keys).first)


def test_a_pass_with_zero_phases(store, pinned):
    from drkit.evidence import Recorder

    Recorder.open(store, kind="runbook", name="patch", environment="lab",
                  plan=pinned).seal("pass")
    _check(store, pinned, "inconsistent")
