"""Flow packs (issue 14): smoke flows and the RPO canary declared per payments API, not wired to
the lab's. A second, differently shaped API (a tiny HTTP server of this test: other paths, other
field names, an API key header instead of a bearer token, a test merchant id it insists on) is
driven by its own pack through the flows, the canary, `plan validate` and a real drill."""

from __future__ import annotations

import itertools
import json
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from typer.testing import CliRunner

from drkit import flows
from drkit.cli import app
from drkit.config import load_flow_pack, load_plan
from drkit.errors import BadInput

REPO = Path(__file__).resolve().parents[1]
KEY = "acme-key-5f1d0c9b7e2a4e31"  # the secret: must never be written anywhere
MERCHANT = "m-test-42"


# -- a second payments API -------------------------------------------------------------------


@dataclass
class Acme:
    """Charges, not payments: POST /v2/charges {amount: {value, currency}, merchant_id,
    metadata: {ref}} -> 201 {charge: {charge_id, state, ...}}; settle; list by ref prefix
    under `data`; a books check under `result`. Every route wants X-Api-Key."""

    charges: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_token: dict[str, str] = field(default_factory=dict)
    seq: itertools.count = field(default_factory=lambda: itertools.count(1))
    lock: threading.Lock = field(default_factory=threading.Lock)
    seen_keys: list[str] = field(default_factory=list)

    def handle(self, method: str, url: str, headers: Any, body: Any) -> tuple[int, Any]:
        self.seen_keys.append(headers.get("X-Api-Key") or "")
        if headers.get("X-Api-Key") != KEY:
            return 401, {"error": "no or wrong API key"}
        parts = urlsplit(url)
        path = parts.path.rstrip("/").split("/")[1:]
        with self.lock:
            if method == "POST" and path == ["v2", "charges"]:
                token = headers.get("Idempotency-Token")
                if token and token in self.by_token:
                    return 200, {"charge": self.charges[self.by_token[token]]}
                if body.get("merchant_id") != MERCHANT:
                    return 422, {"error": f"unknown merchant {body.get('merchant_id')}"}
                cid = f"ch_{next(self.seq):06d}"
                self.charges[cid] = {"charge_id": cid, "state": "pending",
                                     "amount": body["amount"], "merchant_id": MERCHANT,
                                     "metadata": body.get("metadata") or {}}
                if token:
                    self.by_token[token] = cid
                return 201, {"charge": self.charges[cid]}
            if method == "GET" and path == ["v2", "charges"]:
                prefix = parse_qs(parts.query).get("ref_prefix", [""])[0]
                return 200, {"data": [c for c in self.charges.values()
                                      if str(c["metadata"].get("ref", "")).startswith(prefix)]}
            if method == "GET" and path[:2] == ["v2", "charges"] and len(path) == 3:
                c = self.charges.get(path[2])
                return (200, {"charge": c}) if c else (404, {"error": "no such charge"})
            if method == "POST" and len(path) == 4 and path[3] == "settle":
                c = self.charges.get(path[2])
                if not c:
                    return 404, {"error": "no such charge"}
                c["state"] = "settled"
                return 200, {"charge": c}
            if method == "GET" and path == ["v2", "books", "check"]:
                total = sum(int(c["amount"]["value"]) for c in self.charges.values())
                return 200, {"result": {"ok": True, "debit": total, "credit": total,
                                        "lines": 2 * len(self.charges)}}
            if path == ["v2", "debug", "whoami"]:  # a 200 that carries the credential back
                return 200, {"key": headers.get("X-Api-Key")}
            if path == ["v2", "debug", "echo"]:
                # A careless server echoing the credential it got: must not reach any record.
                return 500, {"error": f"debug: you sent key {headers.get('X-Api-Key')}"}
        return 404, {"error": "no route"}


@pytest.fixture
def acme() -> Iterator[tuple[Acme, str]]:
    api = Acme()

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(n)) if n else {}
            status, out = api.handle(self.command, self.path, self.headers, body)
            raw = json.dumps(out).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = _any

        def log_message(self, *a: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield api, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


CREATE = {
    "request": {"method": "POST", "path": "/v2/charges",
                "headers": {"Idempotency-Token": "t-${uuid}"},
                "body": {"amount": {"value": "${amount}", "currency": "${currency}"},
                         "merchant_id": "${merchant}", "metadata": {"ref": "smoke-${uuid}"}}},
    "expect": {"status": 201, "json": {"charge.state": "pending",
                                       "charge.amount.value": "${amount}",
                                       "charge.merchant_id": "${merchant}"}},
    "capture": {"charge": "charge.charge_id"},
}
CANARY = {
    "write": {"request": {"method": "POST", "path": "/v2/charges",
                          "headers": {"Idempotency-Token": "${reference}"},
                          "body": {"amount": {"value": 1, "currency": "EUR"},
                                   "merchant_id": "${merchant}",
                                   "metadata": {"ref": "${reference}"}}},
              "expect": {"status": [200, 201]}, "capture": {"charge": "charge.charge_id"}},
    "read_back": {"request": {"path": "/v2/charges?ref_prefix=${prefix}"},
                  "items": "data", "reference": "metadata.ref"},
    "ledger": {"request": {"path": "/v2/books/check"}, "balanced": "result.ok",
               "debits_cents": "result.debit", "credits_cents": "result.credit",
               "entries": "result.lines"},
}


def acme_pack(canary: bool = True) -> dict[str, Any]:
    """A fresh copy each time: tests change their pack."""
    return json.loads(json.dumps(_acme_pack(canary)))


def _acme_pack(canary: bool) -> dict[str, Any]:
    return {
        "version": 1, "name": "acme-charges",
        "vars": {"amount": 250, "currency": "EUR"},
        "secrets": {"key": {"env": "ACME_API_KEY"}},
        "headers": {"X-Api-Key": "${secret.key}"},
        "flows": {
            "create-and-read": {"detail": "charge ${charge} read back", "steps": [
                CREATE,
                {"request": {"path": "/v2/charges/${charge}"},
                 "expect": {"json": {"charge.charge_id": "${charge}"}}}]},
            "settle": {"detail": "charge ${charge} settled", "steps": [
                CREATE,
                {"request": {"method": "POST", "path": "/v2/charges/${charge}/settle"},
                 "expect": {"json": {"charge.state": "settled"}}}]},
        },
        **({"canary": CANARY} if canary else {}),
    }


def write_pack(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# -- the flows, the canary and reconciliation against it ---------------------------------------


def test_a_second_api_passes_its_own_flows(acme: tuple[Acme, str], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    api, url = acme
    monkeypatch.setenv("ACME_API_KEY", KEY)
    load_flow_pack(write_pack(tmp_path / "acme.yml", acme_pack()))  # the schema accepts it
    pack = flows.FlowPack.from_json(acme_pack(), {"merchant": MERCHANT})
    results = flows.run_smoke(url, None, ["create-and-read", "settle"], pack=pack)
    assert [r.status for r in results] == [flows.FlowStatus.PASS] * 2, results
    assert results[0].detail.startswith("charge ch_") and "read back" in results[0].detail
    assert any(c["state"] == "settled" for c in api.charges.values())
    # The lab's flows mean nothing here: they are the lab pack's, not this API's.
    with pytest.raises(BadInput, match="unknown smoke flow.*authorize.*known: create-and-read"):
        flows.run_smoke(url, None, ["authorize"], pack=pack)
    # Another merchant id (from the plan's flow_vars) is refused by this API: the flow fails
    # with the API's reason, it does not pass by accident.
    other = flows.FlowPack.from_json(acme_pack(), {"merchant": "m-nobody"})
    bad = flows.run_smoke(url, None, ["settle"], pack=other)
    assert bad[0].status is flows.FlowStatus.FAIL
    assert "HTTP 422 unknown merchant m-nobody" in bad[0].detail
    # An expected field that differs fails with what was expected and seen.
    wrong = acme_pack()
    wrong["flows"]["settle"]["steps"][1]["expect"]["json"]["charge.state"] = "captured"
    got = flows.run_smoke(url, None, ["settle"],
                          pack=flows.FlowPack.from_json(wrong, {"merchant": MERCHANT}))
    assert "charge.state is 'settled', expected 'captured'" in got[0].detail


def test_a_secret_never_appears_in_the_results(acme: tuple[Acme, str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    api, url = acme
    monkeypatch.setenv("ACME_API_KEY", KEY)
    data = acme_pack()
    data["flows"]["leaky"] = {"steps": [{"request": {"path": "/v2/debug/echo"}}]}
    pack = flows.FlowPack.from_json(data, {"merchant": MERCHANT})
    results = flows.run_smoke(url, None, ["create-and-read", "leaky"], pack=pack)
    assert api.seen_keys and set(api.seen_keys) == {KEY}  # it was sent...
    leaky = results[1]
    assert leaky.status is flows.FlowStatus.FAIL and "you sent key ***" in leaky.detail
    assert KEY not in json.dumps([r.to_json() for r in results])  # ...and never kept
    # Without the variable the pack names, nothing is sent: bad input naming the variable.
    monkeypatch.delenv("ACME_API_KEY")
    with pytest.raises(BadInput, match="secret key: environment variable ACME_API_KEY is not set"):
        flows.run_smoke(url, None, ["settle"], pack=pack)


def test_the_canary_writes_and_reads_back_through_the_declared_endpoints(
        acme: tuple[Acme, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime

    api, url = acme
    monkeypatch.setenv("ACME_API_KEY", KEY)
    pack = flows.FlowPack.from_json(acme_pack(), {"merchant": MERCHANT})
    fault = datetime.now(UTC)
    with flows.Canary(url, None, "run1", rate_per_s=50, pack=pack) as canary:
        while len(canary.acked) < 10:
            threading.Event().wait(0.02)
    acked = canary.acked
    assert canary.failures == 0 and all(a.payment_id.startswith("ch_") for a in acked)
    rec = flows.reconcile(url, None, "run1", acked, fault, pack=pack)
    assert rec.lost_count == 0 and rec.acked_digest == rec.present_digest
    assert rec.ledger_balanced is True and rec.ledger_entries == 2 * len(api.charges)
    # One acknowledged charge vanishes (a lost write): the read-back sees it missing.
    gone = acked[3]
    del api.charges[gone.payment_id]
    rec = flows.reconcile(url, None, "run1", acked, fault, pack=pack)
    assert rec.missing == (gone.reference,) and rec.lost_count == 1
    # A pack without a ledger endpoint: the balance is not read (None), never assumed.
    data = acme_pack()
    del data["canary"]["ledger"]
    rec = flows.reconcile(url, None, "run1", acked, fault,
                          pack=flows.FlowPack.from_json(data, {"merchant": MERCHANT}))
    assert rec.ledger_balanced is None
    # A pack without a canary cannot start one.
    with pytest.raises(BadInput, match="declares no canary"):
        flows.Canary(url, None, "run2", pack=flows.FlowPack.from_json(acme_pack(False)))


def test_the_shipped_lab_pack_is_the_lab_flows() -> None:
    pack = load_flow_pack(REPO / "flows" / "payments-lab.yml")
    assert tuple(pack.flows) == flows.FLOWS == tuple(flows.default_pack().flows)
    assert pack.canary is not None and pack.undefined(("state_dir",)) is None
    plan = load_plan(REPO / "drkit.yml")
    for env in ("lab", "lab-aws"):
        assert plan.flow_pack_path(env) == REPO / "flows" / "payments-lab.yml"
        assert plan.smoke_flows(env, ["payments"]) == list(flows.FLOWS)


# -- plan validate ----------------------------------------------------------------------------


def _plan(tmp: Path, env_extra: dict[str, Any], pack: dict[str, Any] | None,
          smoke: list[str] | None = None) -> Path:
    (tmp / "inv").mkdir(exist_ok=True)
    if pack is not None:
        write_pack(tmp / "acme.yml", pack)
    data = {
        "version": 1,
        "regions": {"primary": "eu-west-1", "secondary": "eu-central-1"},
        "environments": {"acme": {"inventory": "inv", "entry_url": "http://127.0.0.1:9",
                                  "flows": "acme.yml", "flow_vars": {"merchant": MERCHANT},
                                  **env_extra}},
        "services": {"charges": {"tier": 1, "rto": "30s", "rpo": "0s",
                                 **({"smoke": smoke} if smoke is not None else {})}},
        "scenarios": {},
    }
    (tmp / "drkit.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    return tmp / "drkit.yml"


def _validate(plan: Path) -> tuple[int, str]:
    res = CliRunner().invoke(app, ["plan", "validate", "--plan", str(plan)])
    return res.exit_code, res.output.strip()


@pytest.mark.parametrize("change, expected", [
    (lambda p: p["flows"]["settle"]["steps"][1]["expect"].update(status=999),
     r"acme\.yml:\d+ flows\.settle\.steps\.1\.expect\.status.*999 is not an HTTP status"),
    (lambda p: p["flows"]["settle"]["steps"][1]["request"].update(path="v2/no-slash"),
     r"acme\.yml:\d+ flows\.settle\.steps\.1\.request\.path"),
    (lambda p: p["flows"]["settle"]["steps"][1]["request"].update(path="/v2/${nobody}"),
     r"flows\.settle\.steps\.1: \$\{nobody\} is not defined"),
    (lambda p: p["flows"]["settle"]["steps"][0]["request"]["body"].update(k="${secret.key}"),
     r"a secret goes only in the pack's headers"),
    (lambda p: p["headers"].update(Authorization="Bearer ${secret.token}"),
     r"\$\{secret\.token\} is not a declared secret"),
    (lambda p: p["secrets"].update(x={"env": "A", "file": "/b"}),
     r"secrets\.x.*exactly one of env"),
    (lambda p: p["canary"]["write"].update(capture={}),
     r"canary\.write.*capture exactly one field"),
    (lambda p: p["flows"].update({"bad name!": {"steps": [CREATE]}}),
     r"'bad name!' is not a flow name"),
])
def test_plan_validate_checks_flow_packs(tmp_path: Path, change: Any, expected: str) -> None:
    pack = json.loads(json.dumps(acme_pack()))
    change(pack)
    code, out = _validate(_plan(tmp_path, {}, pack))
    assert code == 2, out
    assert len(out.splitlines()) == 1 and "Traceback" not in out
    assert __import__("re").search(expected, out), out


def test_plan_validate_checks_the_environment_side(tmp_path: Path) -> None:
    assert _validate(_plan(tmp_path, {}, acme_pack())) == (0, _validate(
        _plan(tmp_path, {}, acme_pack()))[1])
    code, out = _validate(_plan(tmp_path, {}, acme_pack()))
    assert code == 0 and "valid" in out
    # The merchant id comes from the plan: without it, ${merchant} is undefined.
    code, out = _validate(_plan(tmp_path, {"flow_vars": {}}, acme_pack()))
    assert code == 2 and "${merchant} is not defined" in out, out
    code, out = _validate(_plan(tmp_path, {"flows": "missing.yml"}, acme_pack()))
    assert code == 2 and "environments.acme.flows" in out and "does not exist" in out, out
    code, out = _validate(_plan(tmp_path, {}, acme_pack(), smoke=["settle", "authorize"]))
    assert code == 2 and "services.charges.smoke: unknown smoke flow 'authorize'" in out, out
    assert "defines: create-and-read, settle" in out
    code, out = _validate(_plan(tmp_path, {"target": "gcp"}, acme_pack()))
    assert code == 2 and "environments.acme.target" in out, out


# -- a drill against the second API, through the real smoke action -----------------------------


def _drill_plan(tmp: Path, url: str, pack: dict[str, Any]) -> Path:
    """A plan of its own: an environment on the acme API, a scenario whose fault changes
    nothing (a no-op play starts the clock) and whose smoke phase is the shipped one."""
    for name in ("playbooks", "ansible.cfg"):
        (tmp / name).symlink_to(REPO / name)
    inv = tmp / "inv"
    (inv / "group_vars").mkdir(parents=True)
    (inv / "hosts.yml").write_text(
        "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
        "      ansible_python_interpreter: '{{ ansible_playbook_python }}'\n")
    (inv / "group_vars" / "all.yml").write_text(
        f"drkit_target: acme\ndrkit_entry_url: {url}\n")
    (tmp / "fault.yml").write_text(
        "- name: A fault that changes nothing\n  hosts: localhost\n  gather_facts: false\n"
        "  tasks:\n    - name: Say so\n      ansible.builtin.debug:\n        msg: no-op\n")
    write_pack(tmp / "acme.yml", pack)
    data = {
        "version": 1, "name": "acme",
        "regions": {"primary": "eu-west-1", "secondary": "eu-central-1"},
        "environments": {"acme": {"inventory": "inv", "entry_url": url, "flows": "acme.yml",
                                  "flow_vars": {"merchant": MERCHANT}}},
        "services": {"charges": {"tier": 1, "rto": "60s", "rpo": "0s"}},
        "scenarios": {"smoke-only": {
            "type": "region-failover", "services": ["charges"],
            "phases": [{"name": "inject-fault", "playbook": "fault.yml", "starts_clock": True},
                       {"name": "smoke", "stops_clock": True,
                        "playbook": "playbooks/scenarios/region-failover/smoke.yml"}],
            "rollback": "fault.yml"}},
        "evidence": {"store": "./evidence", "signing_key": "keys/evidence.key",
                     "anchor": "./anchor.jsonl"},
    }
    plan = tmp / "drkit.yml"
    plan.write_text(yaml.safe_dump(data, sort_keys=False))
    drkit = str(Path(__import__("sys").executable).parent / "drkit")
    subprocess.run([drkit, "evidence", "keygen", "-o", str(tmp / "keys" / "evidence.key")],
                   check=True, capture_output=True)
    return plan


def _run(plan: Path, *args: str, env: dict[str, str]) -> tuple[int, dict[str, Any], str]:
    drkit = str(Path(__import__("sys").executable).parent / "drkit")
    proc = subprocess.run([drkit, *args, "--plan", str(plan)], capture_output=True, text=True,
                          timeout=300, env=env)
    try:
        return proc.returncode, json.loads(proc.stdout or "{}"), proc.stderr
    except ValueError:
        raise AssertionError(f"rc {proc.returncode}: {proc.stdout[-2000:]}\n"
                             f"{proc.stderr[-2000:]}") from None


def _everything_under(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file()
                    and not p.is_symlink())


def test_a_drill_on_a_second_api_passes_and_keeps_its_secret(
        acme: tuple[Acme, str], tmp_path: Path) -> None:
    import os

    api, url = acme
    pack = acme_pack()
    # A flow whose pass message would carry the credential the server echoed: the results
    # (and so the record and the reports) must hold *** instead.
    pack["flows"]["whoami"] = {"detail": "whoami said ${echoed}", "steps": [
        {"request": {"path": "/v2/debug/whoami"}, "capture": {"echoed": "key"}}]}
    plan = _drill_plan(tmp_path, url, pack)
    env = {**os.environ, "ACME_API_KEY": KEY, "DRKIT_OPERATOR": "h14a-test"}
    code, out, err = _run(plan, "drill", "run", "smoke-only", "--env", "acme", "--json",
                          "--no-failback", env=env)
    assert out.get("verdict") == "pass" and code == 0, (out.get("reasons"), err[-2000:])
    smoke = {r["flow"]: r for r in out["smoke"]}
    assert set(smoke) == {"create-and-read", "settle", "whoami"}
    assert all(r["status"] == "pass" for r in smoke.values())
    assert smoke["whoami"]["detail"] == "whoami said ***"
    assert out["reconciliation"]["lost_count"] == 0
    assert out["reconciliation"]["acked_count"] > 0 and out["reconciliation"]["ledger"][
        "balanced"] is True
    # The API saw the credential on every request; nothing drkit wrote holds it: the run
    # folder (ansible-runner's artifacts, extra vars, summary), the evidence store, an export.
    assert set(api.seen_keys) == {KEY}
    drkit = str(Path(__import__("sys").executable).parent / "drkit")
    for fmt in ("html", "json", "md"):
        proc = subprocess.run([drkit, "evidence", "export", out["evidence"]["id"], "--format",
                               fmt, "-o", str(tmp_path / f"report.{fmt}"), "--plan", str(plan)],
                              env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert b"create-and-read" in (tmp_path / f"report.{fmt}").read_bytes()
    run_dir = Path(out["artifacts_dir"]) if out.get("artifacts_dir") else None
    written = _everything_under(tmp_path) + (_everything_under(run_dir) if run_dir and not
                                             run_dir.is_relative_to(tmp_path) else b"")
    assert b"job_events" in b"".join(str(p).encode() for p in tmp_path.rglob("*"))
    assert len(written) > 10_000 and KEY.encode() not in written


def test_a_drill_with_an_rpo_target_and_no_canary_cannot_pass(
        acme: tuple[Acme, str], tmp_path: Path) -> None:
    import os

    _, url = acme
    plan = _drill_plan(tmp_path, url, acme_pack(canary=False))
    env = {**os.environ, "ACME_API_KEY": KEY}
    code, out, err = _run(plan, "drill", "run", "smoke-only", "--env", "acme", "--json",
                          "--no-failback", env=env)
    assert code == 1 and out.get("verdict") == "inconclusive", (out, err[-2000:])
    assert any("RPO not measured: no canary ran" in m for m in out["missing"]), out["missing"]
    assert all(r["status"] == "pass" for r in out["smoke"])  # the flows themselves were green


def test_the_flows_cli_runs_a_pack_by_hand(acme: tuple[Acme, str], tmp_path: Path) -> None:
    import os
    import sys

    _, url = acme
    pack = write_pack(tmp_path / "acme.yml", acme_pack())
    cmd = [sys.executable, "-m", "drkit.flows", "smoke", "--entry", url, "--pack", str(pack),
           "--var", f"merchant={MERCHANT}", "--json"]
    env = {k: v for k, v in os.environ.items() if k != "ACME_API_KEY"}
    ok = subprocess.run(cmd, env={**env, "ACME_API_KEY": KEY}, capture_output=True, text=True,
                        timeout=60, cwd=REPO)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    out = json.loads(ok.stdout)
    assert [r["flow"] for r in out["results"]] == ["create-and-read", "settle"]
    assert KEY not in ok.stdout + ok.stderr
    missing = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert missing.returncode == 2 and "ACME_API_KEY is not set" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
