"""The write-ahead recorder: open a record when a run starts, add to it, seal it into the chain.

    rec = Recorder.open(store, kind="drill", name="region-failover", environment="lab", plan=plan)
    rec.add_phase("preflight", status="ok", started_at=t0, ended_at=t1, run=result)
    rec.seal("pass", summary)

The open record lives at open/<id>.json (outside the chain) and is rewritten atomically after
every addition, with the writer's pid, its start time and host. `recover_interrupted(store)`
seals the open records of dead writers as "interrupted", so a SIGKILLed run still leaves a
record. Sealing (sequence number, prev_hash, hash, signature) happens under the store's lock;
then the new head goes to the plan's anchor and the hash to its time-stamping authority.

No signing oracle: an open record is signed by the run's signer when it is written, and
`recover_interrupted` seals only open records whose signature verifies with the PLAN's
signer, with that signer; nothing in an open file (a key path, a key id) chooses a key.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import secrets as _secrets
import socket
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from drkit.errors import BadInput, DrkitError, Interrupted, RunFailed
from drkit.evidence import ledger
from drkit.evidence.record import (
    SCHEMA_VERSION,
    Approval,
    Artifact,
    Canary,
    Clock,
    FileDigest,
    Finding,
    Git,
    Identity,
    IndexEntry,
    Kind,
    Phase,
    Record,
    Redacted,
    Redaction,
    Regions,
    Severity,
    SignerInfo,
    Smoke,
    Status,
    Target,
    Task,
    Verdict,
    between_ms,
    canonical,
    digest,
    json_safe,
    ms,
    record_file_bytes,
    utc,
)
from drkit.evidence.redact import (
    RULES,
    Tally,
    env_secrets,
    redact_data,
    redact_jsonl,
    redact_text,
)
from drkit.evidence.signing import Signer, signer_for, verify_signature
from drkit.evidence.store import AlreadyExists, Store, record_key, safe_name

if TYPE_CHECKING:
    from drkit.config import Plan
    from drkit.engine import RunResult
    from drkit.evidence.anchor import Anchor

MAX_ARTIFACT_BYTES = 256 * 1024 * 1024


def new_id(now: datetime | None = None) -> str:
    """Sortable and unique: 20250301T021407Z-9f3a61c2."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{_secrets.token_hex(4)}"


def operator() -> str:
    """Who runs drkit: $DRKIT_OPERATOR (a scheduler names the team), else the OS user."""
    env = os.environ.get("DRKIT_OPERATOR", "").strip()
    if env:
        return env
    return _os_user()


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def identity(*, aws: bool = False, aws_env: Mapping[str, str] | None = None) -> Identity:
    """The operator's identity, from the environment's real identity where one exists: on an
    AWS target the caller identity ARN of the credentials the run uses (established by AWS);
    otherwise the OS user and $DRKIT_OPERATOR, marked self-asserted. `aws_env`: the AWS_*
    variables the run's AWS calls use, when they are not this process's (issue 14: the
    AWS-shaped lab's moto and its credentials)."""
    user = _os_user()
    if aws:
        arn = _aws_caller_arn(aws_env or {})
        if arn:
            return Identity(name=arn, source="aws-sts", self_asserted=False, os_user=user,
                            aws_arn=arn)
    return Identity(name=operator(), source="os-user", self_asserted=True, os_user=user)


def _aws_caller_arn(env: Mapping[str, str]) -> str | None:
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        def get(name: str) -> str | None:
            return env.get(name) or os.environ.get(name) or None

        sts = boto3.client("sts", endpoint_url=get("AWS_ENDPOINT_URL"),
                           region_name=get("AWS_REGION") or get("AWS_DEFAULT_REGION"),
                           aws_access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
                           aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
                           config=Config(connect_timeout=5, read_timeout=10,
                                         retries={"max_attempts": 2}))
        try:
            return str(sts.get_caller_identity()["Arn"])
        except (BotoCoreError, ClientError, KeyError):
            return None
    except ImportError:
        return None


def pid_start(pid: int) -> int | None:
    """The process's start time (clock ticks since boot): tells a live pid from a reused one."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def pid_alive(pid: int, started: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        # PID 1 here does not reap orphans: a killed writer can linger as a zombie.
        if fields[0] == b"Z":
            return False
        if started is not None and int(fields[19]) != started:
            return False  # the pid was reused by another process
    except (OSError, IndexError, ValueError):
        pass
    return True


def _git(root: Path) -> Git:
    def run(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                                 text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = run("rev-parse", "HEAD")
    if commit is None:
        return Git()
    status = run("status", "--porcelain", "--untracked-files=no")
    return Git(commit=commit.strip(), dirty=bool(status.strip()) if status is not None else None)


def _sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_digests(paths: Iterable[Path], root: Path | None) -> list[FileDigest]:
    """SHA-256 of each file; a folder (an inventory) contributes every file inside it."""
    out: dict[str, FileDigest] = {}
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise BadInput(f"evidence: {p} does not exist (every playbook, template and "
                           "inventory a run uses is hashed into its record)")
        found = sorted(q for q in p.rglob("*") if q.is_file()
                       and not any(part.startswith(".") for part in q.relative_to(p).parts)
                       ) if p.is_dir() else [p]
        for q in found:
            q = q.resolve()
            shown = str(q)
            if root is not None and q.is_relative_to(root.resolve()):
                shown = q.relative_to(root.resolve()).as_posix()
            out[shown] = FileDigest(shown, _sha256_file(q))
    return list(out.values())


def _versions() -> dict[str, str]:
    from drkit import __version__
    from drkit.engine import versions

    return {"drkit": __version__, **versions()}


_TASK_STATUS = {s.value: s for s in Status}


def _status(value: str | bool | None) -> Status:
    if isinstance(value, bool):
        return Status.OK if value else Status.FAILED
    v = str(value or "").lower()
    if v in ("pass", "passed", "green", "success", "successful"):
        return Status.OK
    if v in ("fail", "red", "error"):
        return Status.FAILED
    return _TASK_STATUS.get(v, Status.FAILED)


@dataclass(frozen=True)
class Recovery:
    """What recover_interrupted did: the records it sealed, and open runs it left alone."""

    sealed: tuple[Record, ...] = ()
    left_open: tuple[str, ...] = ()  # "<id>: why" (writer alive, other host, no key)


class Recorder:
    """Builds one record while a run goes; see the module docstring. Thread-safe."""

    def __init__(self, store: Store, signer: Signer, base: Record, secrets: Sequence[str],
                 plan: Plan | None, anchor: Anchor | None = None) -> None:
        self.store = store
        self._signer = signer
        self._anchor = anchor
        self.warnings: list[str] = []  # anchor or time stamp not obtained (the record is sealed)
        self._secrets = tuple(secrets)
        self._plan = plan
        self._rec = base
        self._tallies: dict[str, Tally] = {}
        self._lock = threading.Lock()
        self.sealed: Record | None = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, store: Store, *, kind: Kind | str, name: str, environment: str,
             plan: Plan | None = None, approved_by: str | None = None,
             change_id: str | None = None, signing_key_path: Path | str | None = None,
             scenario_type: str | None = None, files: Iterable[Path] = (),
             secrets: Iterable[str] = (), signer: Signer | None = None,
             target_type: str | None = None, anchor: Anchor | None = None,
             aws_env: Mapping[str, str] | None = None) -> Recorder:
        """Open a record (verdict "running") in the store now, before anything runs.

        The signer is `signer`, else the key file `signing_key_path`, else the plan's
        (evidence.kms_key or evidence.signing_key). The anchor is `anchor`, else the plan's."""
        try:
            kind = Kind(kind)
        except ValueError:
            raise BadInput(f"evidence kind {kind!r}: use drill or runbook") from None
        signer = signer or signer_for(plan, key_path=signing_key_path)
        if anchor is None:
            from drkit.evidence.anchor import anchor_for

            anchor = anchor_for(store, plan)
        ev = plan.model.evidence if plan is not None else None
        env_model = plan.model.environments.get(environment) if plan is not None else None
        if target_type is None and env_model is not None:
            target_type = getattr(env_model, "target", None) or (
                "lab" if env_model.lab else None)
        if target_type is not None and not isinstance(target_type, str):
            target_type = str(getattr(target_type, "type", target_type))
        ident = identity(aws=bool(target_type and target_type.startswith("aws")),
                         aws_env=aws_env)
        if scenario_type is None and plan is not None and kind == Kind.DRILL:
            sc = plan.model.scenarios.get(name)
            scenario_type = sc.type if sc else None
        used = list(files)
        if plan is not None:
            used.insert(0, plan.path)
        now = datetime.now(UTC)
        base = Record(
            schema_version=SCHEMA_VERSION, id=safe_name(new_id(now), "id"), seq=None, kind=kind,
            name=name, scenario_type=scenario_type, environment=environment,
            operator=ident.name, approved_by=approved_by, change_id=change_id,
            host=socket.gethostname(), pid=os.getpid(), started_at=utc(now) or "",
            ended_at=None, duration_ms=None, verdict=Verdict.RUNNING, clock=Clock(),
            targets=_plan_targets(plan, name, kind), phases=(), smoke=(), reconciliation=None,
            findings=(), git=_git(plan.root if plan is not None else Path.cwd()),
            files=tuple(file_digests(used, plan.root if plan is not None else None)),
            versions=_versions(), plan_name=plan.model.name if plan is not None else None,
            plan_sha256=plan.sha256 if plan is not None else None,
            retention_class=ev.retention_class if ev else "dr-test-evidence",
            retention_days=round(ev.retention / 86400) if ev else None,
            controls=tuple(ev.controls) if ev else (),
            redaction=Redaction(rules=RULES), artifacts=(), key_id=signer.fingerprint,
            prev_hash=None,
            regions=Regions(plan.model.regions.primary, plan.model.regions.secondary)
            if plan is not None else None,
            target_type=target_type, operator_identity=ident,
            approvals=(Approval(approved_by=approved_by),) if approved_by else (),
            signer=signer_info(signer),
        )
        known = list(secrets) + env_secrets(os.environ)
        rec = cls(store, signer, base, known, plan, anchor)
        rec._write_open()
        return rec

    @property
    def id(self) -> str:
        return self._rec.id

    @property
    def record(self) -> Record:
        """The record as it stands (verdict "running" until sealed)."""
        return self.sealed or self._rec

    # ------------------------------------------------------------------ adding
    def add_phase(self, name: str, *, status: Status | str | bool, started_at: datetime | str,
                  ended_at: datetime | str | None = None, counts_for_rto: bool = False,
                  playbook: str | None = None, message: str = "",
                  run: RunResult | None = None) -> None:
        """Record a phase (a second call with the same name updates it). With `run`, its tasks
        and its artifacts (stdout, job events) are added too."""
        start, end = utc(started_at), utc(ended_at)
        phase = Phase(name=name, status=_status(status), started_at=start, ended_at=end,
                      duration_ms=between_ms(start, end), counts_for_rto=counts_for_rto,
                      playbook=playbook, message=self._text(message, "phases"))
        with self._lock:
            self._put_phase(phase, merge=True)
            self._write_open()
        if run is not None:
            self.add_tasks(run, phase=name)

    def add_tasks(self, run: RunResult, *, phase: str) -> None:
        """The tasks of one playbook run (start, end, duration, status, host) under a phase,
        and the run's stdout and job_events.jsonl as artifacts (redacted)."""
        tasks = tuple(
            Task(play=t.play, task=t.task, host=t.host, status=_status(t.status),
                 started_at=utc(t.started_at), ended_at=utc(t.ended_at),
                 duration_ms=ms(t.duration_s), message=self._text(t.message, "tasks"))
            for t in run.tasks
        )
        with self._lock:
            current = next((p for p in self._rec.phases if p.name == phase), None)
            if current is None:
                start, end = utc(run.started_at), utc(run.ended_at)
                current = Phase(name=phase, status=Status.OK if run.ok else Status.FAILED,
                                started_at=start, ended_at=end, duration_ms=between_ms(start, end),
                                playbook=str(run.playbook))
            self._put_phase(replace(current, tasks=current.tasks + tasks), merge=False)
            self._write_open()
        for src, suffix in ((run.stdout_path, "stdout"), (run.events_path, "job_events.jsonl")):
            if src.is_file():
                self.add_artifact(src, f"{phase}.{suffix}")

    def add_artifact(self, path: Path | str, name: str | None = None) -> Artifact:
        """Copy a file into the store, redacted, and list its digest in the record."""
        path = Path(path)
        name = safe_name(name or path.name, "artifact name")
        try:
            if path.stat().st_size > MAX_ARTIFACT_BYTES:
                raise BadInput(f"artifact {path} is larger than {MAX_ARTIFACT_BYTES} bytes")
            raw = path.read_bytes()
        except OSError as e:
            raise RunFailed(f"evidence: cannot read artifact {path}: {e.strerror}") from None
        return self.add_artifact_bytes(raw, name)

    def add_artifact_bytes(self, raw: bytes, name: str) -> Artifact:
        name = safe_name(name, "artifact name")
        with self._lock:
            taken = {a.name for a in self._rec.artifacts}
            base, n = name, 2
            while name in taken:  # the same phase twice (a retry): keep both
                stem, dot, ext = base.partition(".")
                name, n = f"{stem}-{n}{dot}{ext}", n + 1
        tally = Tally()
        text = raw.decode("utf-8", errors="replace")
        if name.endswith(".jsonl"):
            text = redact_jsonl(text, self._secrets, tally)
        elif name.endswith(".json"):
            try:
                text = json.dumps(redact_data(json.loads(text), self._secrets, tally),
                                  indent=2, sort_keys=True, ensure_ascii=False) + "\n"
            except ValueError:
                text = redact_text(text, self._secrets, tally)
        else:
            text = redact_text(text, self._secrets, tally)
        data = text.encode("utf-8")
        self.store.write(f"artifacts/{self.id}/{name}", data, immutable=True)
        art = Artifact(name=name, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
        with self._lock:
            self._tally(f"artifact:{name}", tally)
            self._rec = replace(self._rec, artifacts=self._rec.artifacts + (art,))
            self._write_open()
        return art

    def add_files(self, paths: Iterable[Path]) -> None:
        """More playbooks, templates or inventories the run used (hashed now)."""
        root = self._plan.root if self._plan is not None else None
        new = file_digests(paths, root)
        with self._lock:
            have = {f.path for f in self._rec.files}
            self._rec = replace(self._rec, files=self._rec.files + tuple(
                f for f in new if f.path not in have))
            self._write_open()

    # ------------------------------------------------------------------ sealing
    def seal(self, verdict: Verdict | str, summary: Mapping[str, Any] | None = None) -> Record:
        """Close the record: apply the summary, append it to the chain, sign it. Idempotent."""
        if self.sealed is not None:
            return self.sealed
        verdict = Verdict(verdict)
        if verdict == Verdict.RUNNING:
            raise BadInput("a sealed record needs a verdict: pass, fail, aborted or interrupted")
        summary = dict(summary or {})
        if summary:
            # Redacted once, tallied as "summary": the artifact summary.json and the record's
            # fields taken from it (targets, smoke, reconciliation, findings).
            tally = Tally()
            clean = redact_data(json_safe(summary), self._secrets, tally)
            with self._lock:
                self._tally("summary", tally)
            text = json.dumps(clean, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
            self.add_artifact_bytes(text.encode("utf-8"), "summary.json")
        else:
            clean = {}
        with self._lock:
            rec = _finish(self._rec, verdict, clean, datetime.now(UTC), self._secrets,
                          self._tallies, self._plan)
            sealed = _seal(self.store, self._signer, rec, anchor=self._anchor, plan=self._plan,
                           warnings=self.warnings)
            if sealed is None:
                raise RunFailed(f"evidence record {rec.id} was sealed by another process "
                                "(recover_interrupted thought its writer was dead)")
            self.sealed = sealed
        return sealed

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        # A run that dies with an exception still leaves a sealed record (chaostoolkit's
        # journal habit); the exception then propagates.
        if self.sealed is None and et is not None:
            stopped = issubclass(et, KeyboardInterrupt | Interrupted)
            self.seal(Verdict.INTERRUPTED if stopped else Verdict.ABORTED,
                      {"error": str(ev) if ev else et.__name__})

    # ------------------------------------------------------------------ internals
    def _text(self, text: str, where: str) -> str:
        if not text:
            return text
        tally = Tally()
        out = redact_text(text, self._secrets, tally)
        self._tally(where, tally)
        return out

    def _tally(self, where: str, tally: Tally) -> None:
        if tally.counts:
            self._tallies.setdefault(where, Tally()).merge(tally)

    def _put_phase(self, phase: Phase, *, merge: bool) -> None:
        phases = list(self._rec.phases)
        for i, p in enumerate(phases):
            if p.name == phase.name:
                phases[i] = replace(phase, tasks=p.tasks + phase.tasks) if merge else phase
                break
        else:
            phases.append(phase)
        self._rec = replace(self._rec, phases=tuple(phases))

    def _write_open(self) -> None:
        rec = replace(self._rec, redaction=_redaction(self._tallies))
        doc: dict[str, Any] = {
            "state": "running",
            "writer": {"pid": os.getpid(), "pid_start": pid_start(os.getpid()),
                       "host": socket.gethostname(), "key_id": self._signer.fingerprint,
                       "updated_at": utc(datetime.now(UTC))},
            "record": rec.to_dict(),
        }
        # Signed when written: recovery seals only what the plan's signer itself opened.
        doc["signature"] = self._signer.sign(open_canonical(doc))
        self.store.write(f"open/{self.id}.json", json.dumps(doc, indent=1, ensure_ascii=False,
                                                            sort_keys=True).encode(),
                         immutable=False)


def open_canonical(doc: Mapping[str, Any]) -> bytes:
    """The signed bytes of an open record: RFC 8785 of the document without its signature."""
    from drkit.evidence.jcs import canonicalize

    return canonicalize({k: v for k, v in doc.items() if k != "signature"})


def signer_info(signer: Signer) -> SignerInfo:
    from drkit.evidence.signing import public_pem

    return SignerInfo(type=signer.type, algorithm=signer.algorithm, key_id=signer.fingerprint,
                      public_key=public_pem(signer.public_key), kms_key=signer.kms_key)


def _plan_targets(plan: Plan | None, name: str, kind: Kind) -> tuple[Target, ...]:
    if plan is None or kind != Kind.DRILL or name not in plan.model.scenarios:
        return ()
    return tuple(Target(service=s, rto_target_ms=ms(plan.model.services[s].rto),
                        rpo_target_ms=ms(plan.model.services[s].rpo))
                 for s in plan.model.scenarios[name].services)


def _redaction(tallies: Mapping[str, Tally]) -> Redaction:
    applied = []
    for where in sorted(tallies):
        t = tallies[where]
        for rule in RULES:
            if t.counts.get(rule):
                keys = tuple(sorted(t.keys)) if rule == RULES[0] else ()
                applied.append(Redacted(where=where, rule=rule, count=t.counts[rule], keys=keys))
    return Redaction(rules=RULES, applied=tuple(applied))


def _num(d: Mapping[str, Any], *names: str) -> float | None:
    for n in names:
        v = d.get(n)
        if isinstance(v, int | float) and not isinstance(v, bool):
            return float(v)
    return None


def _met(given: Any, measured: int | None, target: int | None) -> bool | None:
    if isinstance(given, bool):
        return given
    if measured is None or target is None:
        return None
    return measured <= target


def _targets(base: tuple[Target, ...], summary: Mapping[str, Any]) -> tuple[Target, ...]:
    """Targets from the plan, with what the summary measured (see drkit.evidence docs)."""
    items: list[Mapping[str, Any]] = []
    if isinstance(summary.get("targets"), list):
        items = [t for t in summary["targets"] if isinstance(t, Mapping)]
    rto, rpo = summary.get("rto"), summary.get("rpo")
    if isinstance(rto, Mapping) or isinstance(rpo, Mapping):
        rto, rpo = rto if isinstance(rto, Mapping) else {}, rpo if isinstance(rpo, Mapping) else {}
        items.append({"service": summary.get("service"),
                      "rto_target_s": _num(rto, "target_s", "target"),
                      "rto_s": _num(rto, "measured_s", "measured", "seconds"),
                      "rto_met": rto.get("met"),
                      "rpo_target_s": _num(rpo, "target_s", "target"),
                      "rpo_s": _num(rpo, "measured_s", "measured", "seconds"),
                      "rpo_met": rpo.get("met"),
                      "lost_payments": rpo.get("lost_payments", summary.get("lost_payments"))})
    out = {t.service: t for t in base}
    for item in items:
        service = item.get("service")
        names = [str(service)] if service else (list(out) or ["(all)"])
        for svc in names:
            t = out.get(svc, Target(service=svc))
            rto_t = ms(_num(item, "rto_target_s")) if "rto_target_s" in item else None
            rpo_t = ms(_num(item, "rpo_target_s")) if "rpo_target_s" in item else None
            rto_t = rto_t if rto_t is not None else t.rto_target_ms
            rpo_t = rpo_t if rpo_t is not None else t.rpo_target_ms
            rto_m = ms(_num(item, "rto_s", "rto_measured_s"))
            rpo_m = ms(_num(item, "rpo_s", "rpo_measured_s"))
            lost = item.get("lost_payments")
            out[svc] = Target(
                service=svc, rto_target_ms=rto_t, rto_measured_ms=rto_m,
                rto_met=_met(item.get("rto_met"), rto_m, rto_t), rpo_target_ms=rpo_t,
                rpo_measured_ms=rpo_m, rpo_met=_met(item.get("rpo_met"), rpo_m, rpo_t),
                lost_payments=lost if isinstance(lost, int) and not isinstance(lost, bool)
                else None)
    return tuple(out.values())


def _smoke(value: Any) -> tuple[Smoke, ...]:
    items: list[tuple[str, Any]] = []
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, list):
        items = [(str(v.get("flow") or v.get("name") or "?"), v) for v in value
                 if isinstance(v, Mapping)]
    out = []
    for flow, v in items:
        if isinstance(v, Mapping):
            st = v.get("ok") if "ok" in v else v.get("status", v.get("passed"))
            out.append(Smoke(flow=flow, status=_status(st),
                             duration_ms=ms(_num(v, "duration_s", "seconds")),
                             message=str(v.get("message") or v.get("error") or "")))
        else:
            out.append(Smoke(flow=flow, status=_status(v)))
    return tuple(out)


def _findings(rec: Record, summary: Mapping[str, Any]) -> tuple[Finding, ...]:
    found: dict[str, Finding] = {}
    for f in summary.get("findings") or ():
        if isinstance(f, Mapping):
            check = str(f.get("check") or f.get("title") or f.get("id") or "finding")
            try:
                sev = Severity(str(f.get("severity", "medium")).lower())
            except ValueError:
                sev = Severity.MEDIUM
            found[check] = Finding(sev, check, str(f.get("detail") or f.get("message") or ""))
        elif isinstance(f, str):
            found[f] = Finding(Severity.MEDIUM, f)

    def add(sev: Severity, check: str, detail: str) -> None:
        found.setdefault(check, Finding(sev, check, detail))

    def s(v: int | None) -> str:
        return "?" if v is None else f"{v / 1000:g}s"

    for t in rec.targets:
        if t.rto_met is False:
            add(Severity.HIGH, f"rto:{t.service}",
                f"measured RTO {s(t.rto_measured_ms)} exceeds the target {s(t.rto_target_ms)}")
        if t.rpo_met is False:
            add(Severity.HIGH, f"rpo:{t.service}",
                f"measured RPO {s(t.rpo_measured_ms)} exceeds the target {s(t.rpo_target_ms)}"
                + (f" ({t.lost_payments} acknowledged payments lost)" if t.lost_payments else ""))
    for sm in rec.smoke:
        if sm.status == Status.FAILED:
            add(Severity.HIGH, f"smoke:{sm.flow}", sm.message or "smoke flow failed")
    for p in rec.phases:
        if p.status in (Status.FAILED, Status.UNREACHABLE, Status.ABORTED):
            add(Severity.MEDIUM, f"phase:{p.name}", p.message or f"phase {p.status}")
    if rec.verdict == Verdict.INTERRUPTED:
        add(Severity.HIGH, "run-interrupted", "the run stopped before it finished; phases after "
            "the last one recorded did not run")
    return tuple(found.values())


def _owned(findings: tuple[Finding, ...], rec: Record, plan: Plan | None,
           now: datetime) -> tuple[Finding, ...]:
    """v2: each finding gets an owner (the service's owner in the plan; for a check not tied
    to one service, the owners of the run's services) and a due date (policy.finding_due)."""
    if plan is None:
        return findings
    services = plan.model.services
    run_owners = sorted({services[t.service].owner for t in rec.targets if t.service in services})
    due_after = plan.model.policy.finding_due
    out = []
    for f in findings:
        _, _, tail = f.check.partition(":")
        owner = f.owner or (services[tail].owner if tail in services else
                            (", ".join(run_owners) if run_owners else "unassigned"))
        due = f.due
        if due is None and str(f.severity) in due_after:
            due = (now + timedelta(seconds=due_after[str(f.severity)])).strftime("%Y-%m-%d")
        out.append(replace(f, owner=owner, due=due))
    return tuple(out)


def _canary(summary: Mapping[str, Any], targets: tuple[Target, ...]) -> Canary | None:
    raw = summary.get("canary")
    c: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    lost = [t.lost_payments for t in targets if t.lost_payments is not None]

    def count(*names: str) -> int | None:
        for n in names:
            v = c.get(n)
            if isinstance(v, int) and not isinstance(v, bool):
                return v
        return None

    got = Canary(acknowledged=count("acknowledged", "acked"),
                 failed=count("failed", "failed_attempts"), lost=sum(lost) if lost else None)
    return got if got != Canary() else None


def _approvals(summary: Mapping[str, Any], have: tuple[Approval, ...]) -> tuple[Approval, ...]:
    gov = summary.get("governance")
    a = gov.get("approval") if isinstance(gov, Mapping) else None
    if not isinstance(a, Mapping):
        return have

    def opt(k: str) -> str | None:
        v = a.get(k)
        return str(v) if v is not None else None

    return (Approval(request_id=opt("id"), requested_by=opt("requested_by"),
                     approved_by=opt("approved_by"), approved_at=opt("approved_at")),)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _finish(rec: Record, verdict: Verdict, summary: Mapping[str, Any], now: datetime,
            secrets: Sequence[str], tallies: dict[str, Tally],
            plan: Plan | None = None) -> Record:
    ended = utc(now)
    phases = tuple(replace(p, status=Status.INTERRUPTED, ended_at=p.ended_at or ended,
                           duration_ms=p.duration_ms or between_ms(p.started_at, ended))
                   if p.status == Status.RUNNING else p for p in rec.phases)
    raw_clock = summary.get("clock")
    clock_d: Mapping[str, Any] = raw_clock if isinstance(raw_clock, Mapping) else {}
    timed = [p for p in phases if p.counts_for_rto]
    clock = Clock(
        started_at=utc(clock_d["started_at"]) if clock_d.get("started_at") else (
            min(p.started_at for p in timed if p.started_at) if timed else None),
        stopped_at=utc(clock_d["stopped_at"]) if clock_d.get("stopped_at") else (
            max((p.ended_at for p in timed if p.ended_at), default=None) if timed else None),
        # How the drill obtained each end (issue 19); None when it did not say.
        started_source=_text(clock_d.get("started_source")),
        stopped_source=_text(clock_d.get("stopped_source")),
        canary_first_failure_at=utc(clock_d["canary_first_failure_at"])
        if clock_d.get("canary_first_failure_at") else None,
    )
    recon = summary.get("reconciliation")
    if recon is not None:
        tally = Tally()
        recon = redact_data(json_safe(recon), secrets, tally)
        if tally.counts:
            tallies.setdefault("reconciliation", Tally()).merge(tally)
    rec = replace(rec, verdict=verdict, ended_at=ended,
                  duration_ms=between_ms(rec.started_at, ended), phases=phases, clock=clock,
                  targets=_targets(rec.targets, summary), smoke=_smoke(summary.get("smoke")),
                  reconciliation=recon)
    findings = _findings(rec, summary)
    if rec.schema_version >= 2:
        findings = _owned(findings, rec, plan, now)
        rec = replace(rec, canary=_canary(summary, rec.targets),
                      approvals=_approvals(summary, rec.approvals))
    return replace(rec, findings=findings, redaction=_redaction(tallies))


def _seal(store: Store, signer: Signer, rec: Record, *, anchor: Anchor | None = None,
          plan: Plan | None = None, warnings: list[str] | None = None) -> Record | None:
    """Append to the chain under the store's lock: seq, prev_hash, hash, signature; then the
    time stamp (before the file is written: it is kept in it) and the anchor (after).

    None when the record is already in the chain (sealed, then killed before cleaning up).
    """
    warnings = warnings if warnings is not None else []
    ev = plan.model.evidence if plan is not None else None
    for attempt in range(5):
        with store.lock():
            files, _ = ledger.record_files(store)
            if any(f.id == rec.id for f in files):
                store.delete_open(f"open/{rec.id}.json")
                return None
            seq, prev = ledger.head(store)
            rec = replace(rec, seq=seq + 1, prev_hash=prev, hash=None, signature=None,
                          timestamp=None)
            canon = canonical(rec.to_dict())
            rec = replace(rec, hash=digest(canon), signature=signer.sign(canon))
            if ev is not None and ev.tsa_url and rec.schema_version >= 2:
                from drkit.evidence import tsa

                try:
                    rec = replace(rec, timestamp=tsa.timestamp(ev.tsa_url, rec.hash or ""))
                except RunFailed as e:
                    warnings.append(f"record sealed without an RFC 3161 time stamp: {e}")
            body = record_file_bytes(rec)
            try:
                store.write(record_key(rec.seq or 0, rec.id), body)
            except AlreadyExists:
                # Another host sealed this sequence number first (S3: the lock is per host;
                # the conditional put is what really guards the chain): take the next one.
                if attempt == 4:
                    raise
                continue
            _index_append(store, rec)
            store.delete_open(f"open/{rec.id}.json")
            if anchor is not None:
                _publish(store, anchor, rec, warnings)
            if ev is not None and not ev.trusted_keys:
                warnings.append(f"signing key {signer.fingerprint[:16]}... is not pinned "
                                "(evidence.trusted_keys): verify trusts any public key file it "
                                f"is given; pin {signer.fingerprint}")
            elif ev is not None and signer.fingerprint not in ev.trusted_keys:
                warnings.append(f"record #{rec.seq} signed with key {signer.fingerprint[:16]}"
                                "..., which evidence.trusted_keys does not pin: verify reports "
                                "it as untrusted")
            return rec
    raise AssertionError("unreachable")


def _publish(store: Store, anchor: Anchor, rec: Record, warnings: list[str]) -> None:
    """The new head to the anchor (under the store lock, so heads arrive in order)."""
    from drkit.evidence.anchor import head_of

    assert rec.seq is not None and rec.hash is not None
    try:
        ledger_id = rec.hash if rec.seq == 1 else str(
            ledger.load_dict(store, ledger.record_files(store)[0][0].key).get("hash"))
        anchor.publish(head_of(rec.seq, rec.hash, rec.id, ledger_id))
    except (RunFailed, IndexError) as e:
        warnings.append(f"record #{rec.seq} sealed but not anchored: {e}")


def _index_append(store: Store, rec: Record) -> None:
    """Append the record's index line, first re-adding lines a crash may have left out."""
    entries = ledger.read_index(store)
    last = entries[-1].seq if entries else 0
    assert rec.seq is not None
    missing = b""
    if last < rec.seq - 1:
        for f in ledger.record_files(store)[0]:
            if last < f.seq < rec.seq:
                try:
                    old = Record.from_dict(ledger.load_dict(store, f.key))
                    missing += IndexEntry.of(old).line()
                except Exception:  # noqa: BLE001 - a damaged record is verify's to report
                    continue
    store.append_index(missing + IndexEntry.of(rec).line())


def recover_interrupted(store: Store, *, signing_key_path: Path | str | None = None,
                        plan: Plan | None = None, signer: Signer | None = None) -> Recovery:
    """Seal the open records of writers that died (verdict "interrupted") with the plan's
    signer (or the one given), and only those that signer signed when it opened them. Call it
    where a run starts and in `drill recover`; read-only commands never do (no signing oracle)."""
    names = [n for n in store.list("open") if n.endswith(".json") and not n.startswith(".")]
    if not names:
        return Recovery()
    host = socket.gethostname()
    sealed: list[Record] = []
    left: list[str] = []
    try:
        signer = signer or signer_for(plan, key_path=signing_key_path)
        trusted = signer.public_key
    except DrkitError as e:
        return Recovery((), tuple(f"{n.removesuffix('.json')}: cannot seal it: {e}"
                                  for n in sorted(names)))
    from drkit.evidence.anchor import anchor_for

    anchor = anchor_for(store, plan)
    for n in sorted(names):
        rid = n.removesuffix(".json")
        try:
            from drkit.evidence.jcs import loads_strict

            doc = loads_strict(store.read(f"open/{n}"))
            writer, body = doc["writer"], doc["record"]
            pid, started = int(writer["pid"]), writer.get("pid_start")
            signed = isinstance(doc.get("signature"), str) and verify_signature(
                trusted, open_canonical(doc), doc["signature"])
        except Exception as e:  # noqa: BLE001 - a damaged open record is reported, not fatal
            left.append(f"{rid}: unreadable open record ({e})")
            continue
        if not signed:
            left.append(f"{rid}: not signed by the plan's signer ({signer.describe()}): left "
                        "alone, never sealed (planted, or opened by another signer)")
            continue
        if writer.get("host") != host:
            left.append(f"{rid}: run on host {writer.get('host')} (cannot check its pid here)")
            continue
        if pid_alive(pid, started):
            left.append(f"{rid}: running (pid {pid})")
            continue
        try:
            rec = Record.from_dict({**body, "hash": None, "signature": None})
        except BadInput as e:
            left.append(f"{rid}: writer pid {pid} died, cannot seal it: {e}")
            continue
        if rec.id != rid:
            left.append(f"{rid}: the open file holds record {rec.id}: left alone")
            continue
        ended = writer.get("updated_at") or rec.started_at
        rec = _finish(rec, Verdict.INTERRUPTED, {}, datetime.fromisoformat(
            ended.replace("Z", "+00:00")), (), {}, plan)
        # The tallies of the dead writer are gone; its open record already carries them.
        rec = replace(rec, redaction=Redaction(rules=RULES, applied=Record.from_dict(
            {**body}).redaction.applied))
        try:
            done = _seal(store, signer, rec, anchor=anchor, plan=plan)
        except DrkitError as e:
            left.append(f"{rid}: {e}")
            continue
        if done is not None:
            sealed.append(done)
    return Recovery(tuple(sealed), tuple(left))
