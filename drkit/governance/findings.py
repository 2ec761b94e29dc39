"""The findings register: every failed check or missed target of a drill, until a retest closes it.

Storage is one append-only event log beside the evidence (see drkit.governance.home)::

    findings.jsonl    {"seq", "prev", "at", "by", "action", "finding", ...} one event a line
    .findings.lock    flock held while appending

A finding's state is the fold of its events (opened, recurred, assigned, accepted, closed), so
its whole history is kept and nothing is rewritten. Each line carries the SHA-256 of the line
before it (`prev`): `verify_register` names the first line that was edited or removed.

Rules:

- `open_from_outcome`: each finding of a drill outcome (`DrillOutcome.to_json()`) opens a
  finding with the plan's service owner and a due date from `policy.finding_due[severity]`;
  one that is already unresolved for the same (scenario, environment, check) is not opened
  again but gets a "recurred" event naming the new evidence.
- `close_on_retest`: a later PASSING drill of the same scenario and environment closes the
  unresolved findings whose checks it exercised and passed (a preflight-only pass closes a
  preflight finding, not an RTO one), linking the retest's evidence id.
- `accept` records a risk acceptance (who, when, why); the finding stays unresolved until a
  retest closes it, so an accepted risk is still visible and still deduplicated.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drkit.errors import BadInput
from drkit.governance import aware, ensure_dir, home, iso, locked, parse_iso, who

if TYPE_CHECKING:
    from drkit.config import Plan

LOG = "findings.jsonl"
LOCK = ".findings.lock"
SEVERITIES = ("high", "medium", "low", "info")
_ID = re.compile(r"^\s*(?:[Ff]-?)?0*(\d{1,9})\s*$")


class FindingStatus(StrEnum):
    OPEN = "open"
    ACCEPTED = "accepted"  # risk accepted: unresolved until a retest passes
    CLOSED = "closed"


class Action(StrEnum):
    OPENED = "opened"
    RECURRED = "recurred"
    ASSIGNED = "assigned"
    ACCEPTED = "accepted"
    CLOSED = "closed"


@dataclass(frozen=True)
class Event:
    seq: int
    at: datetime
    by: str
    action: Action
    note: str = ""
    evidence_id: str | None = None
    owner: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "at": iso(self.at), "by": self.by, "action": str(self.action),
                "note": self.note, "evidence_id": self.evidence_id, "owner": self.owner}


@dataclass(frozen=True)
class Finding:
    id: str
    scenario: str
    environment: str
    check: str
    severity: str
    message: str
    owner: str
    opened_at: datetime
    opened_by: str
    evidence_id: str | None
    due_at: datetime | None
    status: FindingStatus = FindingStatus.OPEN
    occurrences: tuple[str, ...] = ()  # evidence ids of every run that saw it
    accepted_by: str | None = None
    accepted_at: datetime | None = None
    acceptance_reason: str | None = None
    closed_at: datetime | None = None
    closed_by_evidence: str | None = None
    history: tuple[Event, ...] = field(default=())

    @property
    def unresolved(self) -> bool:
        return self.status != FindingStatus.CLOSED

    def overdue(self, now: datetime | None = None) -> bool:
        return self.unresolved and self.due_at is not None and aware(now) > self.due_at

    def to_json(self, now: datetime | None = None) -> dict[str, Any]:
        return {
            "id": self.id, "status": str(self.status), "severity": self.severity,
            "scenario": self.scenario, "environment": self.environment, "check": self.check,
            "message": self.message, "owner": self.owner,
            "opened_at": iso(self.opened_at), "opened_by": self.opened_by,
            "due_at": iso(self.due_at), "overdue": self.overdue(now),
            "evidence_id": self.evidence_id, "occurrences": list(self.occurrences),
            "accepted_by": self.accepted_by, "accepted_at": iso(self.accepted_at),
            "acceptance_reason": self.acceptance_reason,
            "closed_at": iso(self.closed_at), "closed_by_evidence": self.closed_by_evidence,
            "history": [e.to_json() for e in self.history],
        }


@dataclass(frozen=True)
class Applied:
    """What one drill outcome did to the register."""

    opened: tuple[Finding, ...] = ()
    recurred: tuple[Finding, ...] = ()
    closed: tuple[Finding, ...] = ()

    def to_evidence(self) -> dict[str, Any]:
        """For the run's evidence summary: which findings it opened, saw again, and closed."""
        def brief(f: Finding) -> dict[str, Any]:
            return {"id": f.id, "check": f.check, "severity": f.severity, "owner": f.owner,
                    "due_at": iso(f.due_at), "status": str(f.status)}

        return {"opened": [brief(f) for f in self.opened],
                "recurred": [brief(f) for f in self.recurred],
                "closed": [brief(f) for f in self.closed]}


@dataclass(frozen=True)
class _Seen:
    """One failed check in an outcome."""

    check: str
    severity: str
    message: str


# -- the log --------------------------------------------------------------------------------


def register_path(plan: Plan, store_dir: str | Path | None = None) -> Path:
    return home(plan, store_dir) / LOG


def _lines(path: Path) -> list[bytes]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    except OSError as e:
        raise BadInput(f"{path}: cannot read the findings register ({e.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    # The last element is b"" after a final newline, or a line cut short by a crash mid-append:
    # either way it is not an event.
    return [ln for ln in lines[:-1] if ln.strip()]


def _events(path: Path) -> list[dict[str, Any]]:
    out = []
    for n, line in enumerate(_lines(path), 1):
        try:
            ev = json.loads(line)
        except ValueError:
            raise BadInput(f"{path}:{n}: not a JSON event; the register was edited by hand "
                           "(restore it from backup)") from None
        if not isinstance(ev, dict) or "finding" not in ev or "action" not in ev:
            raise BadInput(f"{path}:{n}: not a findings event")
        out.append(ev)
    return out


def _append(path: Path, events: Iterable[dict[str, Any]]) -> None:
    """Append events (caller holds the lock), each linked to the line before it."""
    lines = _lines(path)
    prev = hashlib.sha256(lines[-1]).hexdigest() if lines else ""
    seq = len(lines)
    out = bytearray()
    for ev in events:
        seq += 1
        line = json.dumps({"seq": seq, "prev": prev, **ev}, separators=(",", ":"),
                          sort_keys=True).encode()
        prev = hashlib.sha256(line).hexdigest()
        out += line + b"\n"
    if not out:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        os.write(fd, bytes(out))  # one write: a reader sees whole lines (O_APPEND)
        os.fsync(fd)
    finally:
        os.close(fd)


def verify_register(plan: Plan, *, store_dir: str | Path | None = None) -> list[str]:
    """Problems with the log's links (empty when intact): edits, deletions, reordering."""
    path = register_path(plan, store_dir)
    problems = []
    prev = ""
    for n, line in enumerate(_lines(path), 1):
        try:
            ev = json.loads(line)
        except ValueError:
            problems.append(f"{path.name}:{n}: not JSON")
            prev = hashlib.sha256(line).hexdigest()
            continue
        if ev.get("seq") != n or ev.get("prev") != prev:
            problems.append(f"{path.name}:{n}: does not follow line {n - 1} (edited, removed "
                            "or reordered)")
        prev = hashlib.sha256(line).hexdigest()
    return problems


def _fold(events: list[dict[str, Any]]) -> dict[str, Finding]:
    found: dict[str, Finding] = {}
    for ev in events:
        fid = str(ev["finding"])
        at = parse_iso(ev.get("at")) or aware(None)
        e = Event(seq=int(ev.get("seq", 0)), at=at, by=str(ev.get("by", "?")),
                  action=Action(ev["action"]), note=str(ev.get("note") or ""),
                  evidence_id=ev.get("evidence_id"), owner=ev.get("owner"))
        if e.action == Action.OPENED:
            found[fid] = Finding(
                id=fid, scenario=ev["scenario"], environment=ev["environment"],
                check=ev["check"], severity=ev["severity"], message=e.note, owner=e.owner or "",
                opened_at=at, opened_by=e.by, evidence_id=e.evidence_id,
                due_at=parse_iso(ev.get("due_at")),
                occurrences=(e.evidence_id,) if e.evidence_id else (), history=(e,))
            continue
        f = found.get(fid)
        if f is None:
            continue
        f = replace(f, history=f.history + (e,))
        if e.action == Action.RECURRED and e.evidence_id:
            f = replace(f, occurrences=f.occurrences + (e.evidence_id,))
        elif e.action == Action.ASSIGNED:
            f = replace(f, owner=e.owner or f.owner)
        elif e.action == Action.ACCEPTED:
            f = replace(f, status=FindingStatus.ACCEPTED, accepted_by=e.by, accepted_at=at,
                        acceptance_reason=e.note)
        elif e.action == Action.CLOSED:
            f = replace(f, status=FindingStatus.CLOSED, closed_at=at,
                        closed_by_evidence=e.evidence_id)
        found[fid] = f
    return found


def _load(plan: Plan, store_dir: str | Path | None) -> dict[str, Finding]:
    path = register_path(plan, store_dir)
    try:
        return _fold(_events(path))
    except (KeyError, ValueError, TypeError) as e:
        raise BadInput(f"{path}: an event is malformed ({e}); the register was edited by hand "
                       "(restore it from backup)") from None


# -- reading --------------------------------------------------------------------------------


def _norm_id(finding_id: str) -> str:
    m = _ID.match(str(finding_id))
    if m is None:
        raise BadInput(f"invalid finding id {finding_id!r} (ids look like F-12)")
    return f"F-{int(m.group(1))}"


def get(plan: Plan, finding_id: str, *, store_dir: str | Path | None = None) -> Finding:
    fid = _norm_id(finding_id)
    f = _load(plan, store_dir).get(fid)
    if f is None:
        raise BadInput(f"unknown finding {fid} (list them with `drkit findings list`)")
    return f


def list_findings(plan: Plan, open_only: bool = False, *, scenario: str | None = None,
                  environment: str | None = None,
                  store_dir: str | Path | None = None) -> list[Finding]:
    """Findings in the order they were opened; `open_only` keeps open and accepted ones."""
    out = []
    for f in _load(plan, store_dir).values():
        if open_only and not f.unresolved:
            continue
        if scenario is not None and f.scenario != scenario:
            continue
        if environment is not None and f.environment != environment:
            continue
        out.append(f)
    return out


# -- from drill outcomes --------------------------------------------------------------------


def _outcome(outcome: Any) -> Mapping[str, Any]:
    data = outcome.to_json() if hasattr(outcome, "to_json") else outcome
    if not isinstance(data, Mapping) or not data.get("scenario") or not data.get("environment"):
        raise BadInput("a drill outcome needs its scenario and environment "
                       "(pass DrillOutcome.to_json())")
    return data


def _seen(data: Mapping[str, Any]) -> list[_Seen]:
    out: dict[str, _Seen] = {}
    for f in data.get("findings") or ():
        if not isinstance(f, Mapping) or not f.get("check"):
            continue
        sev = str(f.get("severity") or "high").lower()
        msg = str(f.get("message") or f.get("detail") or "")
        out.setdefault(str(f["check"]), _Seen(str(f["check"]), sev if sev in SEVERITIES
                                              else "high", msg))
    if not out and data.get("verdict") == "fail":
        # A failed drill with no named check still failed: keep it on the register.
        reasons = "; ".join(str(r) for r in data.get("reasons") or ()) or "the drill failed"
        out["verdict"] = _Seen("verdict", "high", reasons)
    return list(out.values())


def _owner(plan: Plan, scenario: str, check: str) -> str:
    services = plan.model.services
    sc = plan.model.scenarios.get(scenario)
    names = list(sc.services) if sc else []
    for part in re.split(r"[:/]", check):
        if part in services:  # a check that names a service ("rto:payments") belongs to it
            return services[part].owner
    if not names:
        return "unassigned"
    # Otherwise the owner of the scenario's most critical service (tier 1 first, plan order).
    best = min(names, key=lambda n: (services[n].tier, names.index(n)))
    return services[best].owner


def _due(plan: Plan, severity: str, at: datetime) -> datetime | None:
    seconds = plan.model.policy.finding_due.get(severity)
    return at + timedelta(seconds=seconds) if seconds is not None else None


def _covered(plan: Plan, data: Mapping[str, Any]) -> set[str]:
    """The checks a passing outcome exercised and passed."""
    phases = [p for p in data.get("phases") or () if isinstance(p, Mapping)]
    ok = {str(p.get("name")) for p in phases if p.get("status") == "ok"}
    checks = {f"phase:{n}" for n in ok}
    if phases and phases[0].get("status") == "ok":
        checks.add("preflight")
    if "rollback" in ok:
        checks.add("rollback")
    for s in data.get("smoke") or ():
        if isinstance(s, Mapping) and s.get("status") == "pass":
            checks.add(f"smoke:{s.get('flow')}")
    rto, rpo = data.get("rto") or {}, data.get("rpo") or {}
    if rto.get("actual_s") is not None and rto.get("target_s") is not None \
            and rto["actual_s"] <= rto["target_s"]:
        checks.add("rto")
    if rpo.get("actual_s") is not None and rpo.get("target_s") is not None \
            and rpo["actual_s"] <= rpo["target_s"] \
            and not (rpo["target_s"] == 0 and (rpo.get("lost_payments") or 0) > 0):
        checks.add("rpo")
    rec = data.get("reconciliation")
    ledger = rec.get("ledger") if isinstance(rec, Mapping) else None  # as Reconciliation writes
    if isinstance(ledger, Mapping) and ledger.get("balanced") is True:
        checks.add("ledger")
    sc = plan.model.scenarios.get(str(data.get("scenario")))
    if sc is not None:
        back = [p.name for p in sc.phases if p.failback]
        if back and all(n in ok for n in back):
            checks.add("failback")
        after = data.get("after_failback")
        if isinstance(after, Mapping) and (after.get("lost_count", after.get("lost")) == 0):
            checks.add("failback-data")
        if all(p.name in ok for p in sc.phases if not p.failback):
            checks.add("verdict")  # the whole recovery path ran and passed
    # A check the outcome itself reports as failed is not covered, whatever else says so.
    return checks - {s.check for s in _seen(data)}


def _event(fid: str, action: Action, at: datetime, by: str, **extra: Any) -> dict[str, Any]:
    return {"finding": fid, "action": str(action), "at": iso(at), "by": by, **extra}


def open_from_outcome(plan: Plan, outcome: Any, evidence_id: str | None, *,
                      operator: str | None = None, now: datetime | None = None,
                      store_dir: str | Path | None = None) -> list[Finding]:
    """Open a finding for each failed check of `outcome`; return the new and recurring ones."""
    applied = _apply(plan, outcome, evidence_id, operator=operator, now=now,
                     store_dir=store_dir, close=False)
    return list(applied.opened + applied.recurred)


def close_on_retest(plan: Plan, outcome: Any, evidence_id: str | None, *,
                    operator: str | None = None, now: datetime | None = None,
                    store_dir: str | Path | None = None) -> list[Finding]:
    """A passing drill closes the unresolved findings of its scenario+environment it covers."""
    applied = _apply(plan, outcome, evidence_id, operator=operator, now=now,
                     store_dir=store_dir, open_=False)
    return list(applied.closed)


def apply_outcome(plan: Plan, outcome: Any, evidence_id: str | None, *,
                  operator: str | None = None, now: datetime | None = None,
                  store_dir: str | Path | None = None) -> Applied:
    """Both at once, under one lock: what `drkit drill run` calls when a drill ends."""
    return _apply(plan, outcome, evidence_id, operator=operator, now=now, store_dir=store_dir)


def _apply(plan: Plan, outcome: Any, evidence_id: str | None, *, operator: str | None,
           now: datetime | None, store_dir: str | Path | None, open_: bool = True,
           close: bool = True) -> Applied:
    data = _outcome(outcome)
    if data.get("dry_run"):
        return Applied()  # check mode proves nothing either way
    scenario, env = str(data["scenario"]), str(data["environment"])
    by = who(operator)
    at = aware(now)
    path = register_path(plan, store_dir)
    ensure_dir(path.parent)
    with locked(path.parent / LOCK):
        current = _load(plan, store_dir)
        unresolved = {(f.scenario, f.environment, f.check): f
                      for f in current.values() if f.unresolved}
        events: list[dict[str, Any]] = []
        opened: list[str] = []
        recurred: list[str] = []
        closed: list[str] = []
        if open_:
            next_n = len(current) + 1
            for s in _seen(data):
                known = unresolved.get((scenario, env, s.check))
                if known is not None:
                    if evidence_id and evidence_id in known.occurrences:
                        continue  # the same run applied twice: nothing new
                    events.append(_event(known.id, Action.RECURRED, at, by, note=s.message,
                                         evidence_id=evidence_id))
                    recurred.append(known.id)
                    continue
                fid = f"F-{next_n}"
                next_n += 1
                events.append(_event(
                    fid, Action.OPENED, at, by, note=s.message, evidence_id=evidence_id,
                    owner=_owner(plan, scenario, s.check), scenario=scenario, environment=env,
                    check=s.check, severity=s.severity, due_at=iso(_due(plan, s.severity, at))))
                opened.append(fid)
        if close and data.get("verdict") == "pass":
            covered = _covered(plan, data)
            for (sc, en, check), f in unresolved.items():
                if sc == scenario and en == env and check in covered:
                    events.append(_event(f.id, Action.CLOSED, at, by, evidence_id=evidence_id,
                                         note=f"retest passed ({check})"))
                    closed.append(f.id)
        _append(path, events)
        after = _load(plan, store_dir)
    return Applied(opened=tuple(after[i] for i in opened),
                   recurred=tuple(after[i] for i in recurred),
                   closed=tuple(after[i] for i in closed))


# -- people ---------------------------------------------------------------------------------


def _change(plan: Plan, finding_id: str, action: Action, by: str, now: datetime | None,
            store_dir: str | Path | None, **extra: Any) -> Finding:
    fid = _norm_id(finding_id)
    path = register_path(plan, store_dir)
    ensure_dir(path.parent)
    with locked(path.parent / LOCK):
        f = _load(plan, store_dir).get(fid)
        if f is None:
            raise BadInput(f"unknown finding {fid} (list them with `drkit findings list`)")
        if f.status == FindingStatus.CLOSED:
            raise BadInput(f"finding {fid} is closed (retest {f.closed_by_evidence or '?'} at "
                           f"{iso(f.closed_at)}); nothing to change")
        if action == Action.ACCEPTED and f.status == FindingStatus.ACCEPTED:
            raise BadInput(f"finding {fid} is already accepted (by {f.accepted_by} at "
                           f"{iso(f.accepted_at)})")
        if action == Action.ASSIGNED and extra.get("owner") == f.owner:
            raise BadInput(f"finding {fid} is already owned by {f.owner}")
        _append(path, [_event(fid, action, aware(now), by, **extra)])
        return _load(plan, store_dir)[fid]


def assign(plan: Plan, finding_id: str, owner: str, *, operator: str | None = None,
           now: datetime | None = None, store_dir: str | Path | None = None) -> Finding:
    """Give a finding a new owner; the history keeps who did it and the previous owner."""
    owner = owner.strip()
    if not owner:
        raise BadInput("--owner needs a name (a person or a team)")
    f = get(plan, finding_id, store_dir=store_dir)
    return _change(plan, finding_id, Action.ASSIGNED, who(operator), now, store_dir,
                   owner=owner, note=f"owner {f.owner} -> {owner}")


def accept(plan: Plan, finding_id: str, reason: str, *, operator: str | None = None,
           now: datetime | None = None, store_dir: str | Path | None = None) -> Finding:
    """Record a risk acceptance: who accepted the risk, when, and why."""
    reason = reason.strip()
    if not reason:
        raise BadInput("--reason is required for a risk acceptance (why the risk is acceptable)")
    return _change(plan, finding_id, Action.ACCEPTED, who(operator), now, store_dir, note=reason)
