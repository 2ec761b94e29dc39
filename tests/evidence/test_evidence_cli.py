"""`drkit evidence ...` through Typer's CliRunner: outputs and exit codes."""

from __future__ import annotations

import json
import os

from typer.testing import CliRunner

from drkit.cli.evidence import app
from drkit.evidence.store import record_key

from .conftest import seal_n, seal_one

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def test_keygen_writes_a_pair_and_refuses_to_overwrite(tmp_path):
    key = tmp_path / "keys" / "evidence.key"
    r = run("keygen", "-o", str(key), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["public_key"] == str(tmp_path / "keys" / "evidence.pub")
    assert os.stat(key).st_mode & 0o777 == 0o600
    assert b"BEGIN PRIVATE KEY" in key.read_bytes()
    assert b"BEGIN PUBLIC KEY" in (tmp_path / "keys" / "evidence.pub").read_bytes()
    r = run("keygen", "-o", str(key))
    assert r.exit_code == 2 and "already exists" in r.output and "--force" in r.output
    assert run("keygen", "-o", str(key), "--force").exit_code == 0


def test_list_show_verify_export(store, plan, tmp_path):
    recs = seal_n(store, plan, tmp_path, 3)
    p = str(plan.path)
    r = run("list", "--plan", p)
    assert r.exit_code == 0 and all(x.id in r.stdout for x in recs) and "PASS" in r.stdout
    r = run("list", "--plan", p, "--json", "--kind", "runbook")
    assert r.exit_code == 0 and json.loads(r.stdout)["records"] == []
    r = run("list", "--store", str(store.root), "--since", "2999-01-01", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["records"] == []
    assert run("list", "--plan", p, "--since", "yesterday").exit_code == 2
    assert run("list", "--plan", p, "--kind", "nope").exit_code == 2

    r = run("show", "2", "--plan", p)
    assert r.exit_code == 0 and recs[1].id in r.stdout and "RTO 12.5s / 30s met" in r.stdout
    r = run("show", recs[2].id[:-1], "--plan", p, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["hash"] == recs[2].hash
    assert run("show", "no-such-record", "--plan", p).exit_code == 2

    r = run("verify", "--plan", p)
    assert r.exit_code == 0 and "intact: 3 records" in r.stdout
    r = run("verify", "--store", str(store.root), "--public-key", str(plan.root / "keys" /
                                                                     "evidence.pub"), "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["ok"] is True

    out = tmp_path / "report.html"
    r = run("export", recs[0].id, "--format", "html", "-o", str(out), "--plan", p)
    assert r.exit_code == 0 and "<svg" in out.read_text() and "Verified:" in out.read_text()
    for fmt in ("md", "json", "junit"):
        r = run("export", "1", "--format", fmt, "-o", str(tmp_path / f"r.{fmt}"), "--plan", p)
        assert r.exit_code == 0, r.output
    assert run("export", "1", "--format", "pdf", "--plan", p).exit_code == 2


def test_verify_exit_1_names_the_first_broken_record(store, plan, tmp_path):
    recs = seal_n(store, plan, tmp_path, 4)
    (store.root / record_key(recs[2].seq, recs[2].id)).unlink()
    r = run("verify", "--plan", str(plan.path))
    assert r.exit_code == 1
    assert "first broken: record #3: missing: record #3 is missing" in r.output
    r = run("verify", "--plan", str(plan.path), "--json")
    assert r.exit_code == 1 and json.loads(r.stdout)["first"]["kind"] == "missing"


def test_verify_needs_a_public_key(store, plan, tmp_path):
    seal_one(store, plan, tmp_path)
    # The plan's own public key is gone: verify must ask for one, whatever keys a developer
    # keeps in the checkout it runs from.
    (plan.root / "keys" / "evidence.pub").unlink()
    r = run("verify", "--store", str(store.root), "--plan", str(plan.path))
    assert r.exit_code == 2 and "--public-key" in r.output
    r = run("verify", "--store", str(store.root), "--plan", str(plan.path),
            "--public-key", str(tmp_path / "nope.pub"))
    assert r.exit_code == 2 and "not found" in r.output


def test_bad_plan_is_exit_2(tmp_path):
    (tmp_path / "drkit.yml").write_text("version: [\n")
    r = run("list", "--plan", str(tmp_path / "drkit.yml"))
    assert r.exit_code == 2 and "not valid YAML" in r.output


def test_read_only_commands_never_seal_or_write(store, plan, keys, tmp_path):
    """No signing oracle: list, show, verify and export leave the store byte for byte as it
    was, even with an open record whose writer died (`drkit drill recover` seals those)."""
    from drkit.evidence import Recorder

    from .conftest import dead_pid, rewrite_open, seal_n

    recs = seal_n(store, plan, tmp_path, 1)
    rec = Recorder.open(store, kind="drill", name="region-failover", environment="lab",
                        plan=plan)
    pid = dead_pid()
    rewrite_open(store.root / "open" / f"{rec.id}.json", plan,
                 lambda doc: doc["writer"].update(pid=pid, pid_start=None))

    def snapshot() -> dict:
        return {p: p.read_bytes() for p in sorted(store.root.rglob("*")) if p.is_file()}

    before = snapshot()
    for args in (["list", "--json"], ["show", "1"], ["verify"],
                 ["export", recs[0].id, "--format", "json", "-o", str(tmp_path / "x.json")]):
        r = run(*args, "--plan", str(plan.path))
        assert r.exit_code == 0, (args, r.output)
        assert "sealed interrupted" not in r.output
    assert snapshot() == before


def test_verify_with_pins_anchor_and_expect_seq(store, plan, keys, tmp_path):
    """The plan pins its key and anchors its store: verify needs no key file, reports the
    head, and fails when the newest record goes or when the auditor expects more."""
    import shutil

    from drkit.config import load_plan
    from drkit.evidence.signing import FileSigner

    fp = FileSigner(keys.private).fingerprint
    text = plan.path.read_text().replace(
        "  retention: 1d\n", f"  retention: 1d\n  trusted_keys: [{fp}]\n"
        "  anchor: ./anchor.jsonl\n")
    plan.path.write_text(text)
    recs = seal_n(store, load_plan(plan.path), tmp_path, 2)
    keys.public.unlink()  # pinned: the records carry their key
    r = run("verify", "--plan", str(plan.path))
    assert r.exit_code == 0, r.output
    assert f"key {fp[:16]}..., pinned" in r.stdout and "anchored in" in r.stdout
    assert run("verify", "--plan", str(plan.path), "--expect-seq", "3").exit_code == 1
    # Another store given with --store has no anchor of its own: the plan's is not used.
    other = tmp_path / "copy"
    shutil.copytree(store.root, other)
    r = run("verify", "--store", str(other), "--trust", fp)
    assert r.exit_code == 0 and "anchored" not in r.stdout, r.output
    # The newest record and its index line go: the anchor remembers it.
    (store.root / record_key(2, recs[1].id)).unlink()
    shutil.rmtree(store.root / "artifacts" / recs[1].id)
    lines = (store.root / "index.jsonl").read_text().splitlines(keepends=True)
    (store.root / "index.jsonl").write_text(lines[0])
    r = run("verify", "--plan", str(plan.path))
    assert r.exit_code == 1 and "records after #1 are gone" in r.stderr, r.output
    r = run("verify", "--store", str(store.root), "--trust", fp, "--anchor",
            str(plan.root / "anchor.jsonl"))
    assert r.exit_code == 1 and "records after #1 are gone" in r.stderr, r.output


def test_keygen_prints_the_fingerprint_to_pin(tmp_path):
    import hashlib
    import subprocess

    r = run("keygen", "-o", str(tmp_path / "k" / "evidence.key"), "--json")
    out = json.loads(r.stdout)
    der = subprocess.run(["openssl", "pkey", "-pubin", "-in", out["public_key"], "-outform",
                          "DER"], capture_output=True, check=True).stdout
    assert out["fingerprint"] == hashlib.sha256(der).hexdigest()
    r = run("keygen", "-o", str(tmp_path / "k2" / "evidence.key"))
    assert "evidence.trusted_keys: [" in r.stdout
