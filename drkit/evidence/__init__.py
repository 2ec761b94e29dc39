"""DR test evidence: signed, hash-chained records of every drill and runbook run.

The whole library surface::

    from drkit.evidence import open_store, Recorder, recover_interrupted, verify

    store = open_store(url_or_path, plan=plan)    # "./evidence" (plan-relative) or "s3://b/prefix"
    recover_interrupted(store, plan=plan)         # first, in every command that uses the store
    rec = Recorder.open(store, kind="drill", name="region-failover", environment="lab",
                        plan=plan, approved_by=None, change_id=None,
                        signing_key_path=None,    # default: the plan's evidence.signing_key
                        files=[playbook, ...],    # hashed into the record (folders: every file)
                        secrets=[lab_db_password])  # values scrubbed from record and artifacts
    rec.add_phase("inject-fault", status="ok", started_at=t0, ended_at=t1,
                  counts_for_rto=True,
                  playbook="playbooks/scenarios/region-failover/inject-fault.yml",
                  run=engine_result)              # run= adds its tasks + stdout/job events
    rec.add_tasks(engine_result, phase="smoke")   # or separately
    rec.add_artifact(path, name=None)             # any file, redacted, digest in the record
    record = rec.seal("pass" | "fail" | "aborted" | "interrupted", summary)

`Recorder` is also a context manager: an exception leaves the block sealed as "aborted"
("interrupted" for KeyboardInterrupt / drkit.errors.Interrupted).

`summary` is the run's JSON summary (stored whole, redacted, as the artifact summary.json).
These keys, all optional, fill the record's typed fields (seconds in, milliseconds stored):

- "rto": {"target_s", "measured_s", "met"}, "rpo": {"target_s", "measured_s", "met",
  "lost_payments"}, "service"; or "targets": [{"service", "rto_target_s", "rto_s", "rto_met",
  "rpo_target_s", "rpo_s", "rpo_met", "lost_payments"}]. Targets default to the plan's services
  of the scenario; "met" defaults to measured <= target.
- "clock": {"started_at", "stopped_at"} (ISO-8601); default: the span of counts_for_rto phases.
- "smoke": [{"flow", "ok" | "status", "duration_s", "message"}] or {flow: bool | status}.
- "reconciliation": any JSON object (counts and digests of acknowledged vs present payments).
- "findings": [{"severity": high|medium|low|info, "check", "detail"}]; missed targets, failed
  smoke flows and failed phases are added as findings automatically.

Reading: `verify(store, public_key_path) -> VerifyReport`, `ledger.read_index/select` (list),
`load_record(store, ref)` (id, unique prefix or seq), `export(record, fmt, ...)` (html, md,
json, junit), `generate_keypair(path)`, `redact_text(text, secrets)`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

# name -> submodule. Imported on first use (PEP 562), so `drkit evidence list` does not pay
# for the recorder, verify and signing modules it does not need.
_EXPORTS = {
    "Kind": "record", "Record": "record", "Verdict": "record",
    "Recorder": "recorder", "Recovery": "recorder", "recover_interrupted": "recorder",
    "load_record": "ledger", "read_index": "ledger", "select": "ledger",
    "redact_text": "redact", "generate_keypair": "signing",
    "LocalStore": "store", "Store": "store", "open_store": "locator",
    "VerifyReport": "verify", "verify": "verify",
}
__all__ = [
    "Kind", "LocalStore", "Record", "Recorder", "Recovery", "Store", "Verdict", "VerifyReport",
    "generate_keypair", "load_record", "open_store", "read_index", "recover_interrupted",
    "redact_text", "select", "verify",
]

if TYPE_CHECKING:
    from drkit.evidence.ledger import load_record, read_index, select
    from drkit.evidence.locator import open_store
    from drkit.evidence.record import Kind, Record, Verdict
    from drkit.evidence.recorder import Recorder, Recovery, recover_interrupted
    from drkit.evidence.redact import redact_text
    from drkit.evidence.signing import generate_keypair
    from drkit.evidence.store import LocalStore, Store
    from drkit.evidence.verify import VerifyReport, verify


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'drkit.evidence' has no attribute {name!r}")
    value = getattr(import_module(f"drkit.evidence.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
