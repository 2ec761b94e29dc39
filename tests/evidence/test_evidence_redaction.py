"""No secret reaches any file drkit writes into the store."""

from __future__ import annotations

import json

from drkit.evidence import Recorder, redact_text
from drkit.evidence.recorder import recover_interrupted

from .conftest import T0, make_run

CANARY_VAR = "canary-extravar-7f3e9a1c"
CANARY_ENV = "canary-env-c0ffee42"
CANARY_TEXT = "canary-text-d15ea5e0"
CANARY_KNOWN = "Lab-DB-p4ss-canary-91b2"
CANARY_PEM = "MC4CAQAwBQYDK2VwBCIEIcanarypemcanarypemcanarypem00"


def test_canary_secrets_appear_in_no_file(store, plan, tmp_path, monkeypatch):
    monkeypatch.setenv("DRKIT_TEST_API_TOKEN", "canary-process-env-5e5e5e5e")
    events = [
        {"event": "runner_on_ok", "event_data": {
            "task": "connect", "host": "localhost",
            "res": {"invocation": {"module_args": {"login_password": CANARY_VAR,
                                                   "db": "payments"}},
                    "stdout": f"connected with {CANARY_KNOWN}"}}},
        {"event": "verbose", "stdout": f"PGPASSWORD={CANARY_ENV} psql -c 'select 1'"},
        {"event": "runner_on_ok", "event_data": {"res": {"censored": "the output has been "
                                                         "hidden due to no_log"}}},
    ]
    stdout = (f"TASK [rotate]\nok: [localhost] => api_token: {CANARY_TEXT}\n"
              f"-----BEGIN PRIVATE KEY-----\n{CANARY_PEM}\n-----END PRIVATE KEY-----\n"
              f"env: canary-process-env-5e5e5e5e and {CANARY_KNOWN}\n")
    run = make_run(tmp_path, "smoke", ok=False, stdout=stdout, events=events,
                   message=f"auth failed for password {CANARY_KNOWN}")
    rec = Recorder.open(store, kind="drill", name="region-failover", environment="lab",
                        plan=plan, secrets=[CANARY_KNOWN])
    rec.add_phase("smoke", status="failed", started_at=T0, ended_at=T0.replace(second=9),
                  run=run, message=f"smoke failed, db_password={CANARY_VAR}")
    notes = tmp_path / "notes.txt"
    notes.write_text(f"client_secret: {CANARY_TEXT}\nraw {CANARY_KNOWN}\n")
    rec.add_artifact(notes)
    # The open record on disk is already clean, mid-run.
    assert all(c not in (store.root / "open" / f"{rec.id}.json").read_text()
               for c in (CANARY_VAR, CANARY_KNOWN))
    record = rec.seal("fail", {
        "extra_vars": {"drkit_pg_password": CANARY_VAR, "region": "eu-central-1"},
        "environment": {"PGPASSWORD": CANARY_ENV, "AWS_SECRET_ACCESS_KEY": CANARY_ENV,
                        "PATH": "/usr/bin"},
        "reconciliation": {"acknowledged": 3, "note": f"dsn password={CANARY_KNOWN}"},
        "smoke": [{"flow": "authorize", "ok": False, "message": f"token {CANARY_KNOWN}"}],
    })
    recover_interrupted(store, plan=plan)

    canaries = [CANARY_VAR, CANARY_ENV, CANARY_TEXT, CANARY_KNOWN, CANARY_PEM,
                "canary-process-env-5e5e5e5e"]
    files = [p for p in store.root.rglob("*") if p.is_file()]
    assert len(files) >= 5
    for p in files:
        data = p.read_bytes()
        for c in canaries:
            assert c.encode() not in data, f"{c} leaked into {p}"
    # ...and what was redacted is stated, by rule and key name (never the value).
    applied = {(a.where, a.rule) for a in record.redaction.applied}
    assert ("summary", "secret-key-name") in applied
    assert ("artifact:smoke.stdout", "pem-private-key") in applied
    assert ("artifact:smoke.job_events.jsonl", "known-secret-value") in applied
    keys = {k for a in record.redaction.applied for k in a.keys}
    assert {"drkit_pg_password", "PGPASSWORD", "login_password", "api_token"} <= keys
    # Ansible's own no_log censoring is kept as it is.
    events_text = (store.root / "artifacts" / record.id / "smoke.job_events.jsonl").read_text()
    assert "hidden due to no_log" in events_text
    summary = json.loads((store.root / "artifacts" / record.id / "summary.json").read_text())
    assert summary["extra_vars"] == {"drkit_pg_password": "[REDACTED]", "region": "eu-central-1"}
    assert summary["environment"]["PATH"] == "/usr/bin"


def test_redact_text_scrubs_values_and_assignments():
    text = 'user=alice password=hunter22 {"api_token": "abc123"} TOKEN: x9 plain s3cr3tval'
    out = redact_text(text, ["s3cr3tval"])
    assert "hunter22" not in out and "abc123" not in out and "x9" not in out
    assert "s3cr3tval" not in out and "user=alice" in out
    assert redact_text(out, ["s3cr3tval"]) == out  # idempotent
    assert redact_text("id 42 abc", ["abc"]) == "id 42 abc"  # too short to scrub safely
