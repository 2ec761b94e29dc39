"""Four-eyes approvals: one operator requests a run, another approves it, one run consumes it.

Files, beside the evidence (see drkit.governance.home)::

    requests/<id>.json     the request and its approval and use, rewritten atomically (0600)
    requests/<id>.used     O_EXCL marker: created by the one run that consumes the request
    requests/.lock         flock held for every read-modify-write

The `.used` marker is what makes consumption once-only: creating it with O_EXCL succeeds for
exactly one caller, even if a crash left the JSON behind it, and even without the lock.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drkit.errors import BadInput, RunFailed
from drkit.files import atomic_write
from drkit.governance import aware, ensure_dir, home, iso, locked, parse_iso, who

if TYPE_CHECKING:
    from drkit.config import Plan

_ID = re.compile(r"^req-\d{8}T\d{6}Z-[0-9a-f]{6}$")
_PREFIX = re.compile(r"^[A-Za-z0-9-]{1,40}$")
MAX_REQUEST_BYTES = 64 * 1024


class RequestStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    EXPIRED = "expired"
    USED = "used"


@dataclass(frozen=True)
class Request:
    id: str
    scenario: str
    environment: str
    reason: str
    requested_by: str
    requested_at: datetime
    plan_sha256: str = ""  # the plan the requester saw; recorded, not enforced
    approved_by: str | None = None
    approved_at: datetime | None = None
    expires_at: datetime | None = None
    used_at: datetime | None = None
    used_by: str | None = None
    used_by_run: str | None = None
    evidence_id: str | None = None

    def status(self, now: datetime | None = None) -> RequestStatus:
        if self.used_at is not None:
            return RequestStatus.USED
        if self.approved_at is None:
            return RequestStatus.PENDING
        if self.expires_at is not None and aware(now) >= self.expires_at:
            return RequestStatus.EXPIRED
        return RequestStatus.APPROVED

    def to_json(self, now: datetime | None = None) -> dict[str, Any]:
        data = {k: iso(v) if isinstance(v, datetime) else v for k, v in asdict(self).items()}
        data["status"] = str(self.status(now))
        return data

    def to_evidence(self) -> dict[str, Any]:
        """What the run's evidence summary records: who asked, who approved, when, for what."""
        return {
            "id": self.id, "scenario": self.scenario, "environment": self.environment,
            "reason": self.reason,
            "requested_by": self.requested_by, "requested_at": iso(self.requested_at),
            "approved_by": self.approved_by, "approved_at": iso(self.approved_at),
            "expires_at": iso(self.expires_at),
            "used_by": self.used_by, "used_at": iso(self.used_at),
            "used_by_run": self.used_by_run,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Request:
        def text(key: str) -> str:
            value = data.get(key)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{key} is missing")
            return value

        def opt(key: str) -> str | None:
            value = data.get(key)
            return str(value) if value is not None else None

        requested_at = parse_iso(text("requested_at"))
        assert requested_at is not None
        return cls(
            id=text("id"), scenario=text("scenario"), environment=text("environment"),
            reason=text("reason"), requested_by=text("requested_by"), requested_at=requested_at,
            plan_sha256=opt("plan_sha256") or "",
            approved_by=opt("approved_by"), approved_at=parse_iso(opt("approved_at")),
            expires_at=parse_iso(opt("expires_at")),
            used_at=parse_iso(opt("used_at")), used_by=opt("used_by"),
            used_by_run=opt("used_by_run"), evidence_id=opt("evidence_id"),
        )


def requests_dir(plan: Plan, store_dir: str | Path | None = None) -> Path:
    return home(plan, store_dir) / "requests"


def needs_approval(plan: Plan, scenario: str, env: str) -> bool:
    """The plan asks for four eyes on this scenario, or on every run in this environment."""
    return plan.scenario(scenario).requires_approval or plan.environment(env).requires_approval


def _new_id(now: datetime) -> str:
    return f"req-{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _same(a: str | None, b: str | None) -> bool:
    # Identities compare without case or surrounding space: "Alice" must not approve "alice".
    return a is not None and b is not None and a.strip().casefold() == b.strip().casefold()


def _read(path: Path) -> Request:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        msg = f"unknown request {path.stem!r} (list them with `drkit drill requests`)"
        raise BadInput(msg) from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise BadInput(f"{path}: is a symlink; request files must be real files") from None
        raise RunFailed(f"{path}: cannot read: {e.strerror}") from e
    with os.fdopen(fd, "rb") as f:
        raw = f.read(MAX_REQUEST_BYTES + 1)
    try:
        if len(raw) > MAX_REQUEST_BYTES:
            raise ValueError("too large")
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        req = Request.from_json(data)
    except (ValueError, TypeError) as e:
        raise RunFailed(f"{path}: not a valid request file ({e}); restore it from backup "
                        "or remove it and request again") from None
    if req.id != path.stem:
        raise RunFailed(f"{path}: holds request {req.id!r}, not {path.stem!r}; the file was "
                        "renamed or edited (restore it from backup)")
    marker = path.with_suffix(".used")
    if req.used_at is None and marker.exists():
        # A run consumed it and died before rewriting the JSON: the marker is the truth.
        try:
            used = json.loads(marker.read_text())
        except (OSError, ValueError):
            used = {}
        req = replace(req, used_at=parse_iso(used.get("used_at")) or req.approved_at,
                      used_by=used.get("used_by"), used_by_run=used.get("used_by_run"))
    return req


def _write(path: Path, req: Request) -> None:
    atomic_write(path, (json.dumps(req.to_json(), indent=2) + "\n").encode())


def _path(plan: Plan, request_id: str, store_dir: str | Path | None) -> Path:
    """The file of a request named by its id or a unique prefix of it."""
    rid = request_id.strip()
    if not _PREFIX.match(rid):
        raise BadInput(f"invalid request id {request_id!r} (ids look like "
                       "req-20260301T021407Z-9f3a61)")
    folder = requests_dir(plan, store_dir)
    if _ID.match(rid):
        path = folder / f"{rid}.json"
        if path.exists():
            return path
        matches: list[str] = []
    else:
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            names = []
        except OSError as e:  # --store names a file, or a folder we may not read
            raise BadInput(f"{folder}: cannot list requests ({e.strerror})") from None
        matches = sorted(n[:-5] for n in names if n.endswith(".json") and _ID.match(n[:-5])
                         and n.startswith(rid))
    if len(matches) == 1:
        return folder / f"{matches[0]}.json"
    if len(matches) > 1:
        raise BadInput(f"request id {rid!r} is ambiguous ({', '.join(matches[:3])}, ...): "
                       "give more of it")
    raise BadInput(f"unknown request {rid!r} (list them with `drkit drill requests`)")


def request(plan: Plan, scenario: str, env: str, reason: str, *, operator: str | None = None,
            store_dir: str | Path | None = None, now: datetime | None = None) -> Request:
    """Ask for a run of `scenario` in `env`. Another operator must approve it."""
    plan.scenario(scenario)  # unknown names: one PlanError line listing the declared ones
    plan.environment(env)
    reason = reason.strip()
    if not reason:
        raise BadInput("a request needs a reason (--reason TEXT: why, and the change id if any)")
    at = aware(now)
    req = Request(id=_new_id(at), scenario=scenario, environment=env, reason=reason,
                  requested_by=who(operator), requested_at=at, plan_sha256=plan.sha256)
    folder = ensure_dir(requests_dir(plan, store_dir))
    with locked(folder / ".lock"):
        path = folder / f"{req.id}.json"
        if path.exists():  # 24 random bits in the same second: retry rather than overwrite
            req = replace(req, id=_new_id(at))
            path = folder / f"{req.id}.json"
        _write(path, req)
    return req


def approve(plan: Plan, request_id: str, *, operator: str | None = None,
            expires_in: float | None = None, store_dir: str | Path | None = None,
            now: datetime | None = None) -> Request:
    """Approve a pending request. The requester never approves their own."""
    approver = who(operator)
    if expires_in is not None and expires_in <= 0:
        raise BadInput(f"--expires {expires_in:g}s: an approval must last more than 0s")
    at = aware(now)
    if expires_in is not None:
        try:
            at + timedelta(seconds=expires_in)
        except OverflowError:  # '999999999d': past year 9999, not a traceback
            raise BadInput(f"--expires {expires_in:g}s is too long (use e.g. 24h or 30d)"
                           ) from None
    path = _path(plan, request_id, store_dir)
    with locked(path.parent / ".lock"):
        req = _read(path)
        if _same(req.requested_by, approver):
            raise BadInput(f"request {req.id}: the requester cannot approve their own request "
                           f"(requested by {req.requested_by}; another operator must approve)")
        if req.used_at is not None:
            raise BadInput(f"request {req.id} was already used by run {req.used_by_run or '?'} "
                           f"at {iso(req.used_at)}; it cannot be approved again")
        if req.approved_at is not None:
            raise BadInput(f"request {req.id} is already approved (by {req.approved_by} at "
                           f"{iso(req.approved_at)})")
        expires = at + timedelta(seconds=expires_in) if expires_in is not None else None
        req = replace(req, approved_by=approver, approved_at=at, expires_at=expires)
        _write(path, req)
    return req


def consume(plan: Plan, request_id: str, scenario: str, env: str, *,
            operator: str | None = None, now: datetime | None = None,
            run_id: str | None = None, store_dir: str | Path | None = None) -> Request:
    """Use an approved request for one run: atomically, so only one run ever gets it."""
    runner = who(operator)
    at = aware(now)
    path = _path(plan, request_id, store_dir)
    with locked(path.parent / ".lock"):
        req = _read(path)
        if req.scenario != scenario or req.environment != env:
            raise BadInput(f"request {req.id} is for scenario {req.scenario!r} in environment "
                           f"{req.environment!r}, not {scenario!r} in {env!r}")
        status = req.status(at)
        if status == RequestStatus.PENDING:
            raise BadInput(f"request {req.id} is not approved (another operator must run "
                           f"`drkit drill approve {req.id}`)")
        if status == RequestStatus.USED:
            raise BadInput(f"request {req.id} was already used by run {req.used_by_run or '?'} "
                           f"at {iso(req.used_at)}; request a new approval")
        if status == RequestStatus.EXPIRED:
            raise BadInput(f"request {req.id} expired at {iso(req.expires_at)}; "
                           "request a new approval")
        used = {"used_at": iso(at), "used_by": runner, "used_by_run": run_id}
        try:
            fd = os.open(path.with_suffix(".used"),
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600)
        except FileExistsError:
            raise BadInput(f"request {req.id} was already used; request a new approval") from None
        with os.fdopen(fd, "w") as f:
            json.dump(used, f)
            f.flush()
            os.fsync(f.fileno())
        req = replace(req, used_at=at, used_by=runner, used_by_run=run_id)
        _write(path, req)
    return req


def require(plan: Plan, scenario: str, env: str, request_id: str | None, *,
            operator: str | None = None, now: datetime | None = None,
            run_id: str | None = None, store_dir: str | Path | None = None) -> Request | None:
    """At the start of a run: consume the request given, or refuse a run that needs one."""
    if request_id:
        return consume(plan, request_id, scenario, env, operator=operator, now=now,
                       run_id=run_id, store_dir=store_dir)
    if needs_approval(plan, scenario, env):
        raise BadInput(f"scenario {scenario!r} in environment {env!r} needs an approved request "
                       f"(drkit drill request {scenario} --env {env} --reason TEXT, approved by "
                       "another operator, then --request ID)")
    return None


def record_run(plan: Plan, request_id: str, *, run_id: str | None = None,
               evidence_id: str | None = None, store_dir: str | Path | None = None) -> Request:
    """After the run: link the run and its evidence record to the request it consumed."""
    path = _path(plan, request_id, store_dir)
    with locked(path.parent / ".lock"):
        req = _read(path)
        if req.used_at is None:
            raise BadInput(f"request {req.id} has not been used by a run")
        req = replace(req, used_by_run=req.used_by_run or run_id,
                      evidence_id=req.evidence_id or evidence_id)
        _write(path, req)
    return req


def get(plan: Plan, request_id: str, *, store_dir: str | Path | None = None) -> Request:
    return _read(_path(plan, request_id, store_dir))


def list_requests(plan: Plan, *, store_dir: str | Path | None = None) -> list[Request]:
    """Every request, oldest first."""
    folder = requests_dir(plan, store_dir)
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".json") and _ID.match(n[:-5]))
    except FileNotFoundError:
        return []
    except OSError as e:  # --store names a file, or a folder we may not read
        raise BadInput(f"{folder}: cannot list requests ({e.strerror})") from None
    return [_read(folder / n) for n in names]
