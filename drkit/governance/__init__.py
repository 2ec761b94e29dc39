"""Governed runs: four-eyes approvals, blackout windows, and a findings register.

The whole library surface (nothing here prints or exits; refusals raise drkit.errors.BadInput)::

    from drkit.governance import approvals, blackout, findings

    # Four eyes: a request by one operator, approved by another, consumed by exactly one run.
    approvals.needs_approval(plan, scenario, env) -> bool
    req = approvals.request(plan, scenario, env, reason, operator="alice")
    req = approvals.approve(plan, req.id, operator="bob", expires_in=24 * 3600)
    req = approvals.require(plan, scenario, env, request_id, operator="carol")  # at run start
    #     (= consume() when an id is given; BadInput when the run needs one and has none)
    approvals.record_run(plan, req.id, run_id=..., evidence_id=...)            # after the run
    req.to_evidence()  # -> JSON-able dict for the run's evidence summary
    approvals.get(plan, id_or_prefix), approvals.list_requests(plan)

    # Blackout windows from the plan's `blackouts:` (formats: drkit.governance.blackout).
    decision = blackout.check(plan, at, override_reason)   # BadInput inside a window
    decision.to_evidence()
    blackout.active_window(plan, at) -> Blackout | None
    blackout.next_windows(plan, start, days) -> [Occurrence(window, start, end)]

    # Findings register: an append-only, hash-linked event log.
    findings.apply_outcome(plan, outcome_json, evidence_id) -> Applied(opened, recurred, closed)
    findings.open_from_outcome(...), findings.close_on_retest(...)
    findings.assign(plan, id, owner, operator=...), findings.accept(plan, id, reason, operator=...)
    findings.list_findings(plan, open_only=False), findings.get(plan, id)

Where the files live (`home(plan)`): beside a local evidence store (`<store>/requests/<id>.json`,
`<store>/findings.jsonl`); for an s3:// store, in `<plan root>/.drkit/` because a WORM bucket
cannot hold files that change. Every file is mode 0600, in folders of mode 0700.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from drkit import files
from drkit.errors import BadInput

if TYPE_CHECKING:
    from drkit.config import Plan


def home(plan: Plan, store_dir: str | Path | None = None) -> Path:
    """The folder that holds requests and findings: the local evidence store, or .drkit/."""
    url = str(store_dir) if store_dir is not None else plan.model.evidence.store
    if url.startswith("s3://"):
        return plan.root / ".drkit"
    if "://" in url:
        raise BadInput(f"evidence store {url!r}: unknown scheme (use a directory or s3://)")
    return plan.resolve(url)


def ensure_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.is_symlink() or not path.is_dir():
        raise BadInput(f"{path}: is not a real folder (a symlink or a file is in the way)")
    return path


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive flock on `path`: every read-modify-write of a register happens under it.

    flock excludes separate open() calls even inside one process, so threads are covered too.
    """
    ensure_dir(path.parent)
    with files.locked(path):
        yield


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(at: datetime | None) -> datetime:
    """`at` as an aware UTC datetime (naive means UTC); None means now."""
    if at is None:
        return utcnow()
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)


def iso(at: datetime | None) -> str | None:
    return at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z") if at else None


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    return aware(datetime.fromisoformat(text.replace("Z", "+00:00")))


def who(operator: str | None) -> str:
    """The acting identity: given, else $DRKIT_OPERATOR, else the OS user."""
    if operator is None:
        from drkit.evidence.recorder import operator as _operator

        operator = _operator()
    name = operator.strip()
    if not name:
        raise BadInput("the operator is empty (set DRKIT_OPERATOR or run as a named user)")
    return name
