"""Runbooks on the real lab, under live payment traffic: cert rotation (with its rollback),
rolling patch (with a patch that fails its health check), check mode, certs check, guard rails.

Every run goes through `drkit runbook run` (Typer's CliRunner) and is checked against the lab
itself: the certificate the entry point serves, the versions /healthz reports, HAProxy's server
states, the ledger, and the evidence store.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from drkit.cli.certs import app as certs_app
from drkit.cli.runbook import app as runbook_app
from tests.drills import make_plan

runner = CliRunner()


def _rb(*args: str) -> Any:
    return runner.invoke(runbook_app, list(args))


def _run_json(store: Path, *args: str) -> tuple[int, dict[str, Any]]:
    plan = store.parent / "drkit.yml"  # the store fixture's plan, with its own key
    res = _rb("run", *args, "--plan", str(plan), "--store", str(store), "--json")
    try:
        data = json.loads(res.stdout)
    except ValueError:
        raise AssertionError(f"exit {res.exit_code}, no JSON: {res.output}") from None
    return res.exit_code, data


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """An evidence store next to a plan of the test's own, whose signing key the test made: a
    clean clone has no keys/evidence.key, and tests must not depend on one a developer made."""
    make_plan(tmp_path)
    return tmp_path / "evidence"


def _served(lab: Any) -> str:
    """SHA-256 fingerprint of the certificate the entry point serves, as a client sees it."""
    pem = ssl.get_server_certificate(("127.0.0.1", lab.ports["https"]))
    der = ssl.PEM_cert_to_DER_cert(pem)
    return hashlib.sha256(der).hexdigest()


def _fp(colon_hex: str) -> str:
    return colon_hex.replace(":", "").lower()


def _instances(lab: Any, region: str | None = None) -> dict[str, dict[str, Any]]:
    """/healthz of every payments instance of `region` (default: the primary)."""
    from drkit import lab as labmod

    out = {}
    for svc in labmod.services(lab.config):
        if svc["region"] != (region or lab.primary_region):
            continue
        with urllib.request.urlopen(f"http://127.0.0.1:{svc['port']}/healthz", timeout=5) as r:
            out[svc["server"]] = json.loads(r.read())
        out[svc["server"]]["pid"] = int(Path(svc["pidfile"]).read_text().split()[0])
    return out


def _servers(lab: Any) -> dict[str, dict[str, Any]]:
    from drkit.lab._runtime import runtime

    sock = str(lab.state_dir / "haproxy" / "admin.sock")
    return runtime.haproxy_servers(sock)  # type: ignore[no-any-return]


def _state(lab: Any) -> dict[str, Any]:
    """What a runbook could change: served cert, cert files, versions, pids, LB states."""
    tls = lab.state_dir / "tls"
    return {
        "served": _served(lab),
        "files": {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                  for p in sorted(tls.iterdir()) if p.is_file()},
        "instances": _instances(lab),
        "lb": {be: {s: v["admin"] for s, v in srv.items()} for be, srv in _servers(lab).items()},
    }


@contextmanager
def _traffic(lab: Any) -> Iterator[Any]:
    """Payments through the entry point for the whole block; no request may fail, and the
    ledger must balance afterwards."""
    from drkit.flows import LoadGenerator

    gen = LoadGenerator(lab.entry_url, str(lab.ca_file), rate_per_s=20, workers=2,
                        token=lab.token)
    gen.start()
    try:
        yield gen
    finally:
        stats = gen.stop()
    assert stats.ok > 20, stats
    assert stats.failed == 0, f"requests failed during the run: {stats.to_json()}"
    status, ledger = lab.https_get("/ledger/verify")
    assert status == 200 and ledger["balanced"] is True, ledger


def _records(store: Path, name: str) -> list[Any]:
    from drkit.evidence import open_store, read_index, select

    return select(read_index(open_store(str(store))), kind="runbook", name=name)


# ---------------------------------------------------------------------------------------------
# catalogue and guard rails (no playbook runs)


def test_catalogue_lists_both_runbooks_with_their_header() -> None:
    res = _rb("list", "--json")
    assert res.exit_code == 0, res.output
    books = {b["name"]: b for b in json.loads(res.stdout)["runbooks"]}
    assert set(books) >= {"cert-rotation", "rolling-patch"}
    assert books["cert-rotation"]["requires"] == ["drkit_tls_endpoints"]
    assert books["rolling-patch"]["requires"] == ["drkit_patch_version"]
    assert books["rolling-patch"]["risk"] == "high"
    text = _rb("list")
    assert "cert-rotation  [risk: medium]" in text.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["nope", "--env", "lab"], "unknown runbook 'nope'"),
    (["rolling-patch", "--env", "lab"], "needs variable drkit_patch_version"),
    (["rolling-patch", "--env", "lab", "--extra-var", "drkit_patch_version=2",
      "--limit", "nothere"],
     "--limit 'nothere' matches no host"),
    (["cert-rotation", "--env", "lab", "--limit", "payments"], "matches no host"),
    (["cert-rotation", "--env", "nowhere"], "unknown environment 'nowhere'"),
    (["cert-rotation", "--env", "lab", "--extra-var", "not a pair"], "use KEY=VALUE"),
])
def test_bad_input_is_one_line_and_exit_2(lab_session: Any, store: Path, args: list[str],
                                          message: str) -> None:
    res = _rb("run", *args, "--store", str(store))
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "Traceback" not in res.output
    assert not store.exists()  # refused before anything ran: no record, nothing opened


def test_protected_environment_needs_change_id_and_confirmation(tmp_path: Path,
                                                                lab_session: Any) -> None:
    plan = Path(lab_session.plan_path).read_text()
    (tmp_path / "drkit.yml").write_text(plan)
    for d in ("inventories", "keys", "runbooks", "playbooks"):
        (tmp_path / d).symlink_to(Path(lab_session.plan_path).parent / d)
    p = str(tmp_path / "drkit.yml")
    res = _rb("run", "cert-rotation", "--env", "production", "--plan", p)
    assert res.exit_code == 2 and "--change-id" in res.output, res.output
    # Unattended (CliRunner's stdin is no terminal) and no --yes: refused, nothing asked.
    res = _rb("run", "cert-rotation", "--env", "production", "--change-id", "CHG-1",
              "--plan", p)
    assert res.exit_code == 2 and "pass --yes" in res.output, res.output


# ---------------------------------------------------------------------------------------------
# on the lab, under load


def test_check_mode_shows_changes_and_changes_nothing(lab: Any, store: Path) -> None:
    before = _state(lab)
    code, cert = _run_json(store, "cert-rotation", "--env", "lab", "--check")
    assert code == 0, cert
    assert cert["check"] is True and cert["verdict"] == "pass"
    would = {c["task"] for c in cert["would_change"]}
    assert "Install the new certificate" in would
    assert "Reload HAProxy through its master socket (open connections are kept)" in would
    code, patch = _run_json(store, "rolling-patch", "--env", "lab", "--check",
                            "--extra-var", "drkit_patch_version=9.9.9")
    assert code == 0, patch
    would = {(c["host"], c["task"]) for c in patch["would_change"]}
    first = f"{lab.primary_region}-1"
    assert (first, "Drain the instance at the load balancer (no new requests)") in would
    assert (first, "Restart the instance at version 9.9.9") in would
    assert _state(lab) == before
    assert len(_records(store, "cert-rotation")) == 1
    assert len(_records(store, "rolling-patch")) == 1


def test_expiring_certificate_is_found_and_rotated_under_load(lab: Any, store: Path) -> None:
    with _traffic(lab):
        # A certificate about to expire: issued by the runbook itself with a 5-day validity
        # (the policy's minimum lowered for this one run).
        code, short = _run_json(store, "cert-rotation", "--env", "lab", "--change-id", "CHG-7",
                                "--extra-var", "drkit_cert_validity_days=5",
                                "--extra-var", "drkit_cert_min_validity_s=0")
        assert code == 0, short
        res = runner.invoke(certs_app, ["check", "--env", "lab", "--within", "30d", "--json"])
        assert res.exit_code == 1, res.output
        report = json.loads(res.stdout)
        assert report["expiring"] == [f"127.0.0.1:{lab.ports['https']}"]
        assert report["certs"][0]["trusted"] is True
        assert report["certs"][0]["days_left"] < 6

        code, rotated = _run_json(store, "cert-rotation", "--env", "lab", "--change-id",
                                  "CHG-8")
        assert code == 0, rotated
    summary = rotated["summary"]
    assert _fp(summary["old"]["fingerprint_sha256"]) == _fp(
        short["summary"]["new"]["fingerprint_sha256"])
    assert _fp(summary["new"]["fingerprint_sha256"]) == _served(lab)
    assert summary["verified"] is True and summary["restored"] is False
    assert summary["acm_arn"].startswith("arn:aws:acm:")  # imported into the emulated ACM
    res = runner.invoke(certs_app, ["check", "--env", "lab", "--within", "30d"])
    assert res.exit_code == 0, res.output

    records = _records(store, "cert-rotation")
    assert [r.change_id for r in records] == ["CHG-7", "CHG-8"]
    from drkit.evidence import load_record, open_store

    rec = load_record(open_store(str(store)), records[-1].id)
    blob = json.dumps(rec.to_dict() if hasattr(rec, "to_dict") else str(rec))
    assert "PRIVATE KEY" not in blob
    stored = "".join(p.read_text(errors="replace") for p in store.rglob("*") if p.is_file())
    assert "PRIVATE KEY" not in stored


def test_failed_rotation_puts_the_old_certificate_back(lab: Any, store: Path) -> None:
    before = _served(lab)
    with _traffic(lab):
        # Valid for 10 days while the plan wants 30: verification after install fails.
        code, data = _run_json(store, "cert-rotation", "--env", "lab",
                               "--extra-var", "drkit_cert_validity_days=10")
    assert code == 1, data
    assert data["verdict"] == "fail"
    assert "is served again" in data["failure"]
    assert data["summary"]["restored"] is True
    assert _served(lab) == before
    assert _records(store, "cert-rotation")[-1].verdict == "fail"


def test_rolling_patch_under_load(lab: Any, store: Path) -> None:
    group = "payments_" + lab.primary_region.replace("-", "_")
    before = _instances(lab)
    with _traffic(lab):
        code, data = _run_json(store, "rolling-patch", "--env", "lab", "--limit", group,
                               "--change-id", "CHG-9", "--extra-var", "drkit_patch_version=1.1.0")
    assert code == 0, data
    after = _instances(lab)
    assert set(after) == set(before) and len(after) >= 2
    for name, health in after.items():
        assert health["version"] == "1.1.0" and health["db"] == "up", health
        assert health["pid"] != before[name]["pid"]  # really restarted
    lb = _servers(lab)[f"be_{lab.primary_region}"]
    assert all(s["admin"] == "ready" and s["op"] == "UP" for s in lb.values()), lb
    assert set(data["summary"]["instances"]) == set(after)
    assert _records(store, "rolling-patch")[-1].change_id == "CHG-9"


def test_failing_patch_is_rolled_back_and_stops_the_roll(lab: Any, store: Path,
                                                         tmp_path: Path) -> None:
    # The new version is deployed with a configuration pointing at a database that does not
    # answer: it starts, listens, and its /healthz says the database is down.
    bad = tmp_path / "bad.dsn"
    bad.write_text("host=127.0.0.1 port=1 dbname=payments user=payments password=x\n")
    os.chmod(bad, 0o600)
    group = "payments_" + lab.primary_region.replace("-", "_")
    before = _instances(lab)
    with _traffic(lab):
        code, data = _run_json(store, "rolling-patch", "--env", "lab", "--limit", group,
                               "--extra-var", "drkit_patch_version=6.6.6",
                               "--extra-var", f"drkit_patch_args=--dsn-file {bad}",
                               "--extra-var", "drkit_patch_health_retries=6")
    assert code == 1, data
    assert "rolled back to" in data["failure"]
    after = _instances(lab)
    first, *rest = sorted(after)
    assert after[first]["version"] == before[first]["version"]  # rolled back
    assert after[first]["pid"] != before[first]["pid"]
    for name in rest:  # the roll stopped: never touched
        assert after[name] == before[name]
    lb = _servers(lab)[f"be_{lab.primary_region}"]
    assert all(s["admin"] == "ready" and s["op"] == "UP" for s in lb.values()), lb
    assert data["summary"]["instances"] == {
        first: {"from": before[first]["version"], "to": "6.6.6", "rolled_back": True}}
    assert _records(store, "rolling-patch")[-1].verdict == "fail"
