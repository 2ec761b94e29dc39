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


def test_commands_recover_interrupted_runs_first(store, plan, tmp_path):
    import subprocess

    from drkit.evidence import Recorder

    rec = Recorder.open(store, kind="drill", name="region-failover", environment="lab",
                        plan=plan)
    path = store.root / "open" / f"{rec.id}.json"
    doc = json.loads(path.read_text())
    proc = subprocess.Popen(["sleep", "60"])
    proc.kill()
    proc.wait()
    doc["writer"]["pid"], doc["writer"]["pid_start"] = proc.pid, None
    path.write_text(json.dumps(doc))
    r = run("list", "--plan", str(plan.path), "--json")
    assert r.exit_code == 0
    assert [e["verdict"] for e in json.loads(r.stdout)["records"]] == ["interrupted"]
    assert "sealed interrupted run #1" in r.stderr
