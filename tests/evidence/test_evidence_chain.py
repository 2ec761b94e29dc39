"""The hash chain, signatures and tamper detection, on real files."""

from __future__ import annotations

import base64
import hashlib
import json
import multiprocessing
import os
from pathlib import Path

import pytest

from drkit.errors import BadInput
from drkit.evidence import LocalStore, Recorder, generate_keypair, load_record, read_index, verify
from drkit.evidence.record import GENESIS, canonical
from drkit.evidence.signing import load_private_key, sign
from drkit.evidence.store import record_key, safe_name

from .conftest import seal_n, seal_one


def _file(store: LocalStore, rec) -> Path:
    return store.root / record_key(rec.seq, rec.id)


def _first(store, keys):
    report = verify(store, keys.public)
    assert not report.ok, "tampering went undetected"
    return report.first


def test_records_chain_and_verify(store, plan, keys, tmp_path):
    recs = seal_n(store, plan, tmp_path, 4)
    assert [r.seq for r in recs] == [1, 2, 3, 4]
    assert recs[0].prev_hash == GENESIS
    for a, b in zip(recs, recs[1:], strict=False):
        assert b.prev_hash == a.hash
    d = json.loads(_file(store, recs[2]).read_text())
    assert hashlib.sha256(canonical(d)).hexdigest() == d["hash"] == recs[2].hash
    assert d["schema_version"] == 2 and d["verdict"] == "pass" and d["kind"] == "drill"
    assert d["targets"][0]["rto_measured_ms"] == 12500 and d["targets"][0]["rto_met"] is True
    assert {a["name"] for a in d["artifacts"]} >= {"summary.json", "smoke.stdout",
                                                   "smoke.job_events.jsonl"}
    assert any(f["path"] == "pb/smoke.yml" for f in d["files"])
    assert d["controls"] == ["SOC 2 A1.3", "ISO 27001 A.5.30"]
    assert len(d["phases"][1]["tasks"]) == 2 and d["phases"][1]["tasks"][1]["duration_ms"] == 1500
    assert os.stat(_file(store, recs[2])).st_mode & 0o777 == 0o600
    report = verify(store, keys.public)
    assert report.ok, report.issues
    assert report.records == 4 and report.artifacts == 4 * 7
    assert [e.seq for e in read_index(store)] == [1, 2, 3, 4]
    assert not store.list("open")


def test_one_byte_of_a_record_changed(store, plan, keys, tmp_path):
    recs = seal_n(store, plan, tmp_path, 3)
    f = _file(store, recs[1])
    raw = f.read_bytes()
    i = raw.index(b'"operator":"') + len(b'"operator":"')
    f.write_bytes(raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1:])
    first = _first(store, keys)
    assert (first.seq, first.kind) == (2, "modified")
    assert "changed after it was sealed" in first.message


def test_one_byte_of_an_artifact_changed(store, plan, keys, tmp_path):
    recs = seal_n(store, plan, tmp_path, 3)
    art = store.root / "artifacts" / recs[2].id / "smoke.stdout"
    raw = bytearray(art.read_bytes())
    raw[0] ^= 0x20
    art.write_bytes(bytes(raw))
    first = _first(store, keys)
    assert (first.seq, first.kind) == (3, "artifact-changed")
    assert "smoke.stdout" in first.message


def test_a_record_deleted(store, plan, keys, tmp_path):
    recs = seal_n(store, plan, tmp_path, 4)
    _file(store, recs[1]).unlink()
    report = verify(store, keys.public)
    assert (report.first.seq, report.first.kind) == (2, "missing")
    assert "#2 is missing" in report.first.message
    # The broken link after the gap is not reported twice; the deleted record's artifacts
    # are left behind as an orphan folder (strict verify names it).
    assert [(i.kind, i.record) for i in report.issues[1:]] == [
        ("orphan", f"artifacts/{recs[1].id}")]


def test_two_records_swapped(store, plan, keys, tmp_path):
    recs = seal_n(store, plan, tmp_path, 4)
    a, b = _file(store, recs[1]), _file(store, recs[2])
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)
    first = _first(store, keys)
    assert (first.seq, first.kind) == (2, "reordered")
    assert "swapped" in first.message


def test_ledger_truncated(store, plan, keys, tmp_path):
    recs = seal_n(store, plan, tmp_path, 5)
    _file(store, recs[3]).unlink()
    _file(store, recs[4]).unlink()
    first = _first(store, keys)
    assert (first.seq, first.kind) == (4, "truncated")
    assert "index.jsonl lists 5 records" in first.message and "#4-#5 are gone" in first.message


def test_record_re_signed_with_another_key(store, plan, keys, tmp_path):
    recs = seal_n(store, plan, tmp_path, 3)
    other = generate_keypair(tmp_path / "mallory" / "k.key")
    f = _file(store, recs[1])
    d = json.loads(f.read_text())
    d["verdict"] = "pass"
    d["operator"] = "someone-else"
    canon = canonical(d)
    d["hash"] = hashlib.sha256(canon).hexdigest()
    d["signature"] = sign(load_private_key(other.private), canon)
    f.write_text(json.dumps(d, indent=2))
    report = verify(store, keys.public)
    # The re-hashed record breaks the next link too, but the first broken one is #2.
    assert (report.first.seq, report.first.kind) == (2, "bad-signature")
    assert "re-signed or forged" in report.first.message


def test_hostile_files_are_reported_not_raised(store, plan, keys, tmp_path):
    recs = seal_n(store, plan, tmp_path, 5)
    _file(store, recs[0]).write_bytes(b"\x00\xffnot json at all")
    raw = _file(store, recs[1]).read_bytes()
    _file(store, recs[1]).write_bytes(raw[: len(raw) // 2])  # truncated mid-file
    outside = tmp_path / "outside.json"
    outside.write_bytes(_file(store, recs[2]).read_bytes())
    _file(store, recs[2]).unlink()
    _file(store, recs[2]).symlink_to(outside)
    with open(_file(store, recs[3]), "wb") as f:  # huge
        f.truncate(9 * 1024 * 1024)
    d = json.loads(_file(store, recs[4]).read_text())
    d["surprise"] = {"nested": [1, 2, 3]}
    canon = canonical(d)
    d["hash"] = hashlib.sha256(canon).hexdigest()
    d["signature"] = sign(load_private_key(keys.private), canon)
    _file(store, recs[4]).write_text(json.dumps(d))
    (store.root / "records" / "notes.txt").write_text("hi")
    (store.root / "index.jsonl").open("a").write("{garbage\n")
    art_dir = store.root / "artifacts" / recs[4].id
    (art_dir / "summary.json").unlink()
    (art_dir / "summary.json").symlink_to("/etc/passwd")
    report = verify(store, keys.public)
    kinds = [(i.seq, i.kind) for i in report.issues]
    assert kinds[:5] == [(1, "corrupt"), (2, "corrupt"), (3, "corrupt"), (4, "corrupt"),
                         (5, "unexpected-field")]
    assert "symlink" in report.issues[2].message
    assert "more than a record can be" in report.issues[3].message
    assert (None, "unexpected-file") in kinds and (None, "index") in kinds


def test_symlinked_folder_is_refused(store, plan, keys, tmp_path):
    recs = seal_n(store, plan, tmp_path, 1)
    art = store.root / "artifacts" / recs[0].id
    elsewhere = tmp_path / "elsewhere"
    art.rename(elsewhere)
    art.symlink_to(elsewhere)
    report = verify(store, keys.public)
    assert report.first.kind == "artifact-changed" and "symlink" in report.first.message


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".hidden", "", "x\x00y", "a\\..\\b/c"])
def test_names_that_could_escape_the_store_are_rejected(name):
    with pytest.raises(BadInput, match="invalid evidence"):
        safe_name(name)


def test_artifact_name_cannot_escape(store, plan, tmp_path):
    rec = Recorder.open(store, kind="runbook", name="cert-rotation", environment="lab", plan=plan)
    src = tmp_path / "f.txt"
    src.write_text("x")
    with pytest.raises(BadInput, match="invalid evidence artifact name"):
        rec.add_artifact(src, "../../../../tmp/escaped")
    assert not (tmp_path.parent / "escaped").exists()
    rec.seal("pass")


def test_show_by_seq_prefix_and_id(store, plan, tmp_path):
    recs = seal_n(store, plan, tmp_path, 2)
    assert load_record(store, "2").id == recs[1].id
    assert load_record(store, recs[0].id).seq == 1
    assert load_record(store, recs[0].id[:-1]).seq == 1  # a unique prefix
    assert load_record(store, "#1").id == recs[0].id
    with pytest.raises(BadInput, match="no evidence record"):
        load_record(store, "nope")


def test_signature_is_base64_ed25519_over_canonical_bytes(store, plan, keys, tmp_path):
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    rec = seal_one(store, plan, tmp_path)
    d = json.loads(_file(store, rec).read_text())
    load_pem_public_key(keys.public.read_bytes()).verify(base64.b64decode(d["signature"]),
                                                         canonical(d))


def _seal_in_child(root: str, plan_path: str, n: int) -> None:
    from drkit.config import load_plan

    p = load_plan(plan_path)
    st = LocalStore(Path(root))
    for _ in range(n):
        rec = Recorder.open(st, kind="runbook", name="patch", environment="lab", plan=p)
        rec.add_phase("patch", status="ok", started_at="2025-03-01T02:00:00Z",
                      ended_at="2025-03-01T02:00:01Z")
        rec.seal("pass")


def test_concurrent_sealing_keeps_the_sequence(store, plan, keys):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_seal_in_child, args=(str(store.root), str(plan.path), 8))
             for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    report = verify(store, keys.public)
    assert report.ok, report.issues
    assert report.records == 24
    assert [e.seq for e in read_index(store)] == list(range(1, 25))


def test_reformatted_record_still_verifies_and_spliced_members_do_not(store, plan, keys,
                                                                      tmp_path):
    recs = seal_n(store, plan, tmp_path, 3)
    f1, f2 = _file(store, recs[0]), _file(store, recs[1])
    # Same content, another layout (someone pretty-printed it): still intact.
    f1.write_text(json.dumps(json.loads(f1.read_text()), indent=4))
    assert verify(store, keys.public).ok
    # The hash member moved into a nested object: the content changed, and it is caught.
    raw = f2.read_bytes()
    member = b'"hash":"' + recs[1].hash.encode() + b'",'
    moved = raw.replace(member, b"").replace(b'"git":{', b'"git":{' + member)
    f2.write_bytes(moved)
    first = verify(store, keys.public).first
    assert (first.seq, first.kind) == (2, "corrupt")


def test_parallel_verify_reports_the_same(store, plan, keys, tmp_path, monkeypatch):
    import importlib

    verify_mod = importlib.import_module("drkit.evidence.verify")  # the module, not the function
    recs = seal_n(store, plan, tmp_path, 6)
    _file(store, recs[3]).unlink()
    art = store.root / "artifacts" / recs[4].id / "summary.json"
    art.write_text("{}")
    serial = verify(store, keys.public)
    monkeypatch.setattr(verify_mod, "PARALLEL_MIN", 2)
    parallel = verify(store, keys.public)
    assert parallel.issues == serial.issues and [i.kind for i in serial.issues] == [
        "missing", "artifact-changed", "orphan"]


def test_a_v2_record_says_where_who_and_what_next(store, plan, keys, tmp_path, monkeypatch):
    from .conftest import SUMMARY

    monkeypatch.setenv("DRKIT_OPERATOR", "dr-team")
    summary = {**SUMMARY, "rto": {"target_s": 10, "measured_s": 12.5},
               "canary": {"acknowledged": 412, "failed_attempts": 3},
               "rpo": {"target_s": 0, "measured_s": 0.0, "lost_payments": 0},
               "governance": {"approval": {"id": "REQ-7", "requested_by": "alice",
                                           "approved_by": "cab-chair", "approved_at":
                                           "2025-03-01T01:00:00Z"}}}
    rec = seal_one(store, plan, tmp_path, verdict="fail", summary=summary, change_id="CHG-9")
    d = json.loads(_file(store, rec).read_text())
    assert d["regions"] == {"primary": "eu-west-1", "secondary": "eu-central-1"}
    assert d["target_type"] == "lab"
    ident = d["operator_identity"]
    assert ident["name"] == d["operator"] == "dr-team" and ident["source"] == "os-user"
    assert ident["self_asserted"] is True and ident["os_user"]
    assert d["approvals"] == [{"request_id": "REQ-7", "requested_by": "alice",
                               "approved_by": "cab-chair",
                               "approved_at": "2025-03-01T01:00:00Z"}]
    assert d["change_id"] == "CHG-9"
    assert d["canary"] == {"acknowledged": 412, "failed": 3, "lost": 0}
    rto = next(f for f in d["findings"] if f["check"] == "rto:payments")
    # The plan's payments service has no owner: "unassigned"; high findings are due in 30 days.
    assert rto["owner"] == "unassigned" and rto["due"] and rto["severity"] == "high"
    assert d["signer"]["type"] == "file" and d["signer"]["algorithm"] == "ed25519"
    assert d["key_id"] == d["signer"]["key_id"] == keys.fingerprint
    assert verify(store, keys.public).ok


def test_schema_version_1_records_still_verify_under_their_own_form(store, plan, keys,
                                                                    tmp_path):
    """A ledger written before schema_version 2 (Python's sorted JSON, the raw-key id) keeps
    verifying, and new v2 records chain onto it."""
    import subprocess
    import sys
    from dataclasses import replace as _replace

    from drkit.evidence.record import Record, record_file_bytes
    from drkit.evidence.signing import FileSigner

    first = seal_one(store, plan, tmp_path)
    v1 = _replace(first, schema_version=1, key_id=keys.key_id, hash=None, signature=None,
                  findings=tuple(_replace(f, owner=None, due=None) for f in first.findings))
    d = v1.to_dict()
    assert "signer" not in d and "regions" not in d
    canon = canonical(d)
    body = {k: v for k, v in d.items() if k not in ("hash", "signature")}
    assert canon == json.dumps(body, sort_keys=True, separators=(",", ":"),
                               ensure_ascii=False).encode()
    v1 = _replace(v1, hash=hashlib.sha256(canon).hexdigest(),
                  signature=FileSigner(keys.private).sign(canon))
    _file(store, first).write_bytes(record_file_bytes(v1))
    (store.root / "index.jsonl").write_text("")  # rebuilt by the next seal
    second = seal_one(store, plan, tmp_path)
    assert second.schema_version == 2 and second.prev_hash == v1.hash
    assert Record.from_dict(json.loads(_file(store, first).read_text())).schema_version == 1
    report = verify(store, keys.public)
    assert report.ok, report.issues
    script = Path(__file__).resolve().parents[2] / "drkit-verify"
    got = subprocess.run([sys.executable, str(script), str(store.root), "--public-key",
                          str(keys.public)], capture_output=True, text=True, check=False)
    assert got.returncode == 0, got.stdout + got.stderr
