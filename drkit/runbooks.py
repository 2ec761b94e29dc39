"""On-call runbooks: the catalogue, its guard rails, and a run that always leaves evidence.

A runbook is one playbook, `runbooks/NAME.yml`, whose leading comment block describes it::

    # purpose: Rotate the entry point's TLS certificate (new key, issued by the CA), ...
    # risk: medium - a bad certificate breaks TLS for every client; rolled back on failure
    # requires: drkit_tls_endpoints
    # optional: drkit_cert_validity_days (default 90)

The header lives next to the playbook so that the two cannot drift apart (a separate catalogue
file would). Guard rails run before anything changes, and each failure is one line, exit 2:
an unknown runbook, a protected environment without a change id or without confirmation, a
required variable defined neither in the inventory nor with -e, a `--limit` that matches no
host the runbook targets.

    rb = prepare(plan, "cert-rotation", "lab", RunbookOptions(check=True))   # guard rails
    outcome = run(rb, listener=...)                                         # the playbook

`run` writes an evidence record (kind runbook) whatever happens: opened before the playbook
starts, sealed when it ends, with the change id and whatever the playbook published with
`set_stats: data: {drkit_runbook: {...}}` as its summary.

A run that changes something (not `--check`) holds the environment lock (drkit.envlock):
while a drill, another runbook or `lab up`/`lab down` changes the environment, it is refused
(exit 2, naming who holds it) before anything is written. The plan's change freeze around
drills (`change_freeze`) is a guard rail too, which only `--force-during-drill REASON` passes;
the evidence records the freeze decision and the lock the run held (and any it took over).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from drkit import engine
from drkit.content import collection_dir
from drkit.errors import BadInput

if TYPE_CHECKING:  # the plan's pydantic models cost 0.1 s to import: not for `--help`
    from drkit.config import Plan

CONTENT_ROOT = Path(__file__).resolve().parents[1]
RUNBOOK_DIR = "runbooks"
# Keys of the header; anything else in the comment block is prose for the reader.
_HEADER = re.compile(r"^#\s*(purpose|risk|requires|optional):\s*(.*)$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
# Names the runbooks use for the plan's facts; a user's -e may override them (tests do).
STAT_KEY = "drkit_runbook"


class Risk(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class Verdict(StrEnum):
    PASS = "pass"  # noqa: S105 - a verdict, not a password
    FAIL = "fail"
    ABORTED = "aborted"


@dataclass(frozen=True)
class Variable:
    name: str
    note: str = ""  # "(default 1)" and the like, from the header


@dataclass(frozen=True)
class Runbook:
    name: str
    path: Path
    purpose: str
    risk: Risk
    risk_note: str
    requires: tuple[Variable, ...]
    optional: tuple[Variable, ...]
    hosts: tuple[str, ...]  # host patterns of its plays, as written

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "purpose": self.purpose, "risk": str(self.risk),
                "risk_note": self.risk_note, "playbook": str(self.path),
                "requires": [v.name for v in self.requires],
                "optional": [{"name": v.name, "note": v.note} for v in self.optional],
                "hosts": list(self.hosts)}


# ---------------------------------------------------------------------------------------------
# The catalogue


def runbook_dir(plan: Plan | None = None) -> Path:
    """The plan's own runbooks/ when it has one, else drkit's."""
    if plan is not None and (plan.root / RUNBOOK_DIR).is_dir():
        return plan.root / RUNBOOK_DIR
    return CONTENT_ROOT / RUNBOOK_DIR


def _variables(text: str) -> tuple[Variable, ...]:
    """`a, b (default 1), c` -> variables; commas inside parentheses do not split."""
    out, depth, cur = [], 0, ""
    for ch in text + ",":
        if ch == "," and depth == 0:
            item = cur.strip()
            cur = ""
            if item:
                name, _, note = item.partition(" ")
                out.append(Variable(name.strip(), note.strip()))
            continue
        depth += {"(": 1, ")": -1}.get(ch, 0)
        cur += ch
    return tuple(out)


def load_runbook(path: Path) -> Runbook:
    """Read one runbook's header and its plays' host patterns."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise BadInput(f"{path}: cannot read the runbook: {e.strerror}") from None
    header: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip() in ("", "---"):
            continue
        if not line.startswith("#"):
            break  # the header is the leading comment block only
        m = _HEADER.match(line)
        if m:
            header[m.group(1)] = (header.get(m.group(1), "") + " " + m.group(2)).strip()
    missing = [k for k in ("purpose", "risk") if k not in header]
    if missing:
        raise BadInput(f"{path}: the header lacks {', '.join(missing)} (add a line like "
                       f"'# {missing[0]}: ...' at the top)")
    level, _, note = header["risk"].partition(" ")
    try:
        risk = Risk(level.lower())
    except ValueError:
        raise BadInput(f"{path}: risk {level!r} is not one of low, medium, high") from None
    try:
        from drkit.config import load_yaml

        plays = load_yaml(text)
    except yaml.YAMLError as e:
        raise BadInput(f"{path}: not valid YAML: {e}") from None
    if not isinstance(plays, list) or not plays:
        raise BadInput(f"{path}: a runbook is a playbook: a non-empty list of plays")
    hosts = tuple(str(p.get("hosts", "all")) for p in plays if isinstance(p, dict))
    return Runbook(name=path.stem, path=path, purpose=header["purpose"], risk=risk,
                   risk_note=note.lstrip("-– ").strip(),
                   requires=_variables(header.get("requires", "")),
                   optional=_variables(header.get("optional", "")), hosts=hosts)


def catalogue(plan: Plan | None = None) -> tuple[Runbook, ...]:
    d = runbook_dir(plan)
    return tuple(load_runbook(p) for p in sorted(d.glob("*.yml")) if _NAME.match(p.stem))


def get(plan: Plan | None, name: str) -> Runbook:
    d = runbook_dir(plan)
    path = d / f"{name}.yml"
    if not _NAME.match(name) or not path.is_file():
        known = ", ".join(r.name for r in catalogue(plan)) or "none"
        raise BadInput(f"unknown runbook {name!r} (available: {known}; see `drkit runbook list`)")
    return load_runbook(path)


# ---------------------------------------------------------------------------------------------
# Guard rails


@dataclass(frozen=True)
class RunbookOptions:
    check: bool = False
    limit: str | None = None
    change_id: str | None = None
    confirmed: bool = False  # the operator said yes (--yes, or answered the prompt)
    extravars: Mapping[str, Any] = field(default_factory=dict)
    operator: str | None = None
    evidence_store: str | None = None
    override_blackout: str | None = None  # the reason to run inside a blackout window
    force_during_drill: str | None = None  # the reason to run in the plan's change freeze


@dataclass(frozen=True)
class Prepared:
    """A runbook that passed its guard rails, ready to run."""

    plan: Plan
    runbook: Runbook
    environment: str
    protected: bool
    inventory: Path  # what Ansible is given (the lab's, plus its service instances as hosts)
    source_inventory: Path  # the plan's, for the evidence
    hosts: tuple[str, ...]
    extravars: dict[str, Any]
    envvars: dict[str, str]
    state_dir: Path
    secrets: tuple[str, ...]
    options: RunbookOptions
    blackout: Mapping[str, Any] = field(default_factory=dict)  # the window check, for evidence
    freeze: Mapping[str, Any] | None = None  # the plan's change freeze check, for evidence

    @property
    def needs_confirmation(self) -> bool:
        return self.protected and not self.options.check and not self.options.confirmed


def parse_extravars(pairs: Sequence[str]) -> dict[str, Any]:
    """`KEY=VALUE` pairs. A value that looks like JSON (a list, an object, a number, true or
    false) is decoded, so `--extra-var drkit_patch_serial=2` is a number; anything else stays a
    string."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise BadInput(f"--extra-var {pair!r}: use KEY=VALUE with a variable name as KEY")
        try:
            out[key] = json.loads(value) if re.match(r"^\s*([\[{\d-]|true|false)", value) \
                else value
        except json.JSONDecodeError:
            out[key] = value
    return out


def guard(plan: Plan, name: str, env_name: str, options: RunbookOptions) -> Runbook:
    """The guard rails that need no inventory: the runbook exists, the environment exists, a
    protected environment has a change id."""
    runbook = get(plan, name)
    env = plan.environment(env_name)
    if env.protected and not options.check and not (options.change_id or "").strip():
        raise BadInput(f"environment {env_name!r} is protected: give the change that "
                       "authorises this run with --change-id (e.g. --change-id CHG-1234)")
    return runbook


def prepare(plan: Plan, name: str, env_name: str, options: RunbookOptions) -> Prepared:
    """Check every guard rail; raise BadInput (exit 2) with one line for the first that fails."""
    from drkit.targets import target

    runbook = guard(plan, name, env_name, options)
    env = plan.environment(env_name)
    from drkit.governance import blackout

    # The plan's blackout windows hold for runbooks too (month-end close, a network's peak).
    decision = blackout.check(plan, None, options.override_blackout, operator=options.operator)
    tgt = target(plan, env_name)
    run_dir_root = tgt.state_dir / "runs"
    extravars: dict[str, Any] = {
        **tgt.extravars,
        "drkit_python": _python(),
        "drkit_cert_min_validity_s": int(plan.model.policy.cert_min_validity),
        "drkit_change_id": options.change_id or "",
        **dict(options.extravars),
    }
    inventory = tgt.inventory
    if not options.check:
        from drkit import envlock

        # A refused run writes nothing, not even the generated inventory below (run() holds
        # the lock itself; this only says "busy" before anything is written).
        envlock.refuse_if_busy(tgt.state_dir, env_name, envlock.key_for(plan, env_name))
    freeze = None if options.check else _check_freeze(plan, env_name, tgt.state_dir, options)
    if env.lab:
        inventory = _lab_inventory(plan, tgt.inventory, run_dir_root / ".inventory")
    hosts, defined = _resolve(inventory, runbook.hosts, options.limit,
                              [v.name for v in runbook.requires], extravars)
    if not hosts:
        patterns = ", ".join(runbook.hosts)
        if options.limit:
            raise BadInput(f"--limit {options.limit!r} matches no host that runbook {name} "
                           f"targets ({patterns}) in {tgt.inventory}")
        raise BadInput(f"runbook {name} targets {patterns}, which matches no host in "
                       f"{tgt.inventory}")
    for var in runbook.requires:
        if var.name not in extravars and not defined.get(var.name, False):
            raise BadInput(f"runbook {name} needs variable {var.name}: define it in the "
                           f"inventory ({tgt.inventory}) or pass -e {var.name}=VALUE")
    return Prepared(plan=plan, runbook=runbook, environment=env_name, protected=env.protected,
                    inventory=inventory, source_inventory=tgt.inventory, hosts=tuple(hosts),
                    extravars=extravars, envvars=dict(tgt.envvars), state_dir=tgt.state_dir,
                    secrets=tgt.secrets, options=options, blackout=decision.to_evidence(),
                    freeze=freeze)


def _python() -> str:
    import sys

    return sys.executable


def _lab_inventory(plan: Plan, base: Path, where: Path) -> Path:
    """The lab inventory plus its payments API instances as hosts of group `payments`.

    In the lab every instance is a process on this machine; a runbook that rolls over instances
    (`serial`, `max_fail_percentage`) needs them to be Ansible hosts, as EC2 instances are with
    a real inventory. The lab's own files are linked, not copied, so they stay the truth.
    """
    from drkit import lab

    cfg = lab.config(plan)
    where.mkdir(parents=True, exist_ok=True)
    src = base if base.is_dir() else base.parent
    entries = [base] if base.is_file() else sorted(src.iterdir())
    for entry in entries:
        link = where / entry.name
        if link.is_symlink() and os.readlink(link) == str(entry.resolve()):
            continue
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(entry.resolve())
    groups: dict[str, Any] = {}
    for svc in lab.services(cfg):
        group = "payments_" + svc["region"].replace("-", "_")
        hostvars: dict[str, Any] = {
            "ansible_connection": "local",
            "ansible_python_interpreter": "{{ ansible_playbook_python }}",
        }
        if cfg.topology == "namespaces":  # issue 17: its region's host, over SSH
            from drkit.lab import netns

            hostvars = netns.inventory_vars(cfg, svc["role"])
        groups.setdefault(group, {"hosts": {}})["hosts"][svc["server"]] = {
            **hostvars, "drkit_instance": svc}
    doc = {"payments": {"children": groups}}
    text = ("# Generated by drkit.runbooks: the lab's payments instances as hosts.\n"
            + yaml.safe_dump(doc, sort_keys=True))
    path = where / "zz-drkit-payments.yml"
    if not path.is_file() or path.read_text() != text:
        from drkit.files import atomic_write

        atomic_write(path, text.encode("utf-8"), mode=0o644)
    return where


def _resolve(inventory: Path, patterns: Sequence[str], limit: str | None,
             required: Sequence[str], extravars: Mapping[str, Any],
             ) -> tuple[list[str], dict[str, bool]]:
    """Hosts the runbook's plays would target, and which required variables every one of them
    defines. In-process (about 0.3 s), so a bad --limit fails before Ansible starts."""
    import warnings

    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    # Ansible's own warnings (an unmatched pattern) would print mid-CLI; ours say it better.
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            loader = DataLoader()
            inv = InventoryManager(loader=loader, sources=[str(inventory)])
            if limit:
                inv.subset(limit)
            hosts: list[Any] = []
            for pattern in patterns:
                # A templated pattern is known only once Ansible runs: count every host.
                pat = "all" if "{{" in pattern else pattern
                hosts += [h for h in inv.get_hosts(pat) if h not in hosts]
        except AnsibleError as e:
            raise BadInput(f"inventory {inventory}: {str(e).splitlines()[0]}") from None
        if not required or not hosts:
            return [h.name for h in hosts], {}
        vm = VariableManager(loader=loader, inventory=inv)
        defined = {name: True for name in required}
        for host in hosts:
            names = vm.get_vars(host=host, include_hostvars=False)
            for name in required:
                if name not in names and name not in extravars:
                    defined[name] = False
    return [h.name for h in hosts], defined


def inventory_value(inventory: Path, name: str, extravars: Mapping[str, Any],
                    host: str = "localhost") -> Any:
    """A variable as `host` would see it in a play (inventory vars templated with the extra
    vars), or None when it is not defined there."""
    import warnings

    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar
    from ansible.vars.manager import VariableManager

    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            loader = DataLoader()
            inv = InventoryManager(loader=loader, sources=[str(inventory)])
            vm = VariableManager(loader=loader, inventory=inv)
            h = inv.get_host(host) or next(iter(inv.get_hosts("all")), None)
            variables = dict(vm.get_vars(host=h, include_hostvars=False)) if h else {}
            variables.update(extravars)
            if name not in variables:
                return None
            return Templar(loader=loader, variables=variables).template(variables[name])
        except AnsibleError as e:
            raise BadInput(f"inventory {inventory}: {name}: {str(e).splitlines()[0]}") from None


# ---------------------------------------------------------------------------------------------
# The run


class RunbookListener(engine.RunListener):
    """Observer of a runbook run. Every hook does nothing by default."""

    def runbook_started(self, rb: Prepared, run_id: str) -> None:  # noqa: B027
        pass

    def note(self, message: str) -> None:  # noqa: B027
        pass

    def runbook_finished(self, outcome: RunbookOutcome) -> None:  # noqa: B027
        pass


@dataclass(frozen=True)
class Change:
    """A task that changed something (or, in check mode, would)."""

    host: str
    task: str
    play: str


@dataclass(frozen=True)
class RunbookOutcome:
    id: str
    runbook: str
    environment: str
    verdict: Verdict
    check: bool
    change_id: str | None
    started_at: datetime
    ended_at: datetime
    hosts: tuple[str, ...]
    changes: tuple[Change, ...]
    tasks: int
    failure: str | None
    summary: Mapping[str, Any]
    stats: Mapping[str, engine.HostStats]
    artifacts_dir: Path
    evidence_id: str | None = None
    evidence_error: str | None = None
    warnings: tuple[str, ...] = ()  # sealing's: anchor or time stamp not obtained, key not pinned

    @property
    def exit_code(self) -> int:
        return {Verdict.PASS: 0, Verdict.FAIL: 1, Verdict.ABORTED: 3}[self.verdict]

    @property
    def duration_s(self) -> float:
        return round((self.ended_at - self.started_at).total_seconds(), 3)

    @property
    def changed_count(self) -> int:
        """From the run's stats: `changes` cannot name the tasks whose results no_log hides."""
        return sum(s.changed for s in self.stats.values())

    def to_json(self) -> dict[str, Any]:
        def ts(d: datetime) -> str:
            return d.isoformat().replace("+00:00", "Z")

        return {
            "id": self.id, "runbook": self.runbook, "environment": self.environment,
            "verdict": str(self.verdict), "check": self.check, "change_id": self.change_id,
            "started_at": ts(self.started_at), "ended_at": ts(self.ended_at),
            "duration_s": self.duration_s, "hosts": list(self.hosts),
            "changed" if not self.check else "would_change": [
                {"host": c.host, "task": c.task} for c in self.changes],
            "changed_count": self.changed_count,
            "tasks": self.tasks, "failure": self.failure, "summary": dict(self.summary),
            "stats": {h: vars(s) for h, s in self.stats.items()},
            "artifacts": str(self.artifacts_dir),
            "evidence": {"id": self.evidence_id} if self.evidence_id else None,
            "evidence_error": self.evidence_error,
            "warnings": list(self.warnings),
        }


class _Forward(engine.RunListener):
    def __init__(self, listener: RunbookListener) -> None:
        self.listener = listener

    def play_started(self, name: str, at: datetime) -> None:
        self.listener.play_started(name, at)

    def task_started(self, play: str, task: str, at: datetime) -> None:
        self.listener.task_started(play, task, at)

    def task_finished(self, result: engine.TaskResult) -> None:
        self.listener.task_finished(result)


def _now() -> datetime:
    return datetime.now(UTC)


def _run_id(name: str) -> str:
    import uuid

    return f"{_now().strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:6]}-{name}"


def run(rb: Prepared, *, listener: RunbookListener | None = None,
        cancel: Any = None) -> RunbookOutcome:
    """Run a prepared runbook. Raises BadInput when it still needs confirmation, and errors
    from the evidence store before anything runs; once the playbook starts, everything that
    happens is in the outcome, and the evidence record is sealed whatever happens."""
    if rb.needs_confirmation:
        raise BadInput(f"environment {rb.environment!r} is protected: confirm the run "
                       "(answer the prompt, or pass --yes when unattended)")
    listener = listener or RunbookListener()
    from drkit import envlock

    run_id = _run_id(rb.runbook.name)
    if rb.options.check:
        lock: Any = contextlib.nullcontext()  # check mode changes nothing: it never waits
    else:
        lock = envlock.hold(rb.state_dir, rb.environment, f"runbook run {rb.runbook.name}",
                            key=envlock.key_for(rb.plan, rb.environment), run_id=run_id,
                            operator=rb.options.operator, on_takeover=listener.note)
    with lock as lease:
        governance = {"blackout": rb.blackout,
                      "lock": lease.to_evidence() if lease is not None else None,
                      "change_freeze": rb.freeze}
        return _run_locked(rb, run_id, listener, cancel, governance)


def _check_freeze(plan: Plan, env_name: str, state_dir: Path,
                  options: RunbookOptions) -> dict[str, Any] | None:
    """The plan's change freeze around drills: refuse (exit 2) unless forced with a reason.
    Checked with the guard rails, before anything is written (a drill that runs holds the
    lock, which refuses the run anyway). Returns what goes into the evidence (None: the plan
    declares no freeze)."""
    from drkit import envlock

    freeze = plan.model.change_freeze
    if not freeze.during_drills:
        return None
    mark = envlock.drill_mark(state_dir, envlock.key_for(plan, env_name))
    why = None
    if mark is not None and mark.ended_at is None:
        why = (f"`drkit {mark.command}` (run {mark.run_id}) started at {mark.started_at} and "
               "has not ended (resume it with `drkit drill resume`, or end it with `drkit drill "
               f"recover --env {env_name}`)")
    elif mark is not None and mark.ended_at and freeze.after_drill > 0:
        ended = datetime.fromisoformat(mark.ended_at.replace("Z", "+00:00"))
        until = ended.timestamp() + freeze.after_drill
        if _now().timestamp() < until:
            left = datetime.fromtimestamp(until, UTC).isoformat().replace("+00:00", "Z")
            why = (f"`drkit {mark.command}` (run {mark.run_id}) ended at {mark.ended_at}; the "
                   f"freeze after a drill lasts until {left}")
    decision: dict[str, Any] = {"during_drills": True, "after_drill_s": freeze.after_drill,
                                "in_freeze": why is not None, "why": why, "forced": None}
    if why is None:
        return decision
    reason = (options.force_during_drill or "").strip()
    if not reason:
        raise BadInput(f"{plan.path.name}: change_freeze: environment {env_name!r} is "
                       f"frozen around a drill: {why}; to run anyway, pass "
                       "--force-during-drill REASON (recorded in the evidence)")
    decision["forced"] = {"reason": reason, "by": options.operator or _operator()}
    return decision


def _run_locked(rb: Prepared, run_id: str, listener: RunbookListener, cancel: Any,
                governance: dict[str, Any]) -> RunbookOutcome:
    from drkit.evidence import Recorder, open_store, recover_interrupted

    plan = rb.plan
    store = open_store(rb.options.evidence_store or plan.model.evidence.store, plan=plan)
    recover_interrupted(store, plan=plan)
    run_dir = rb.state_dir / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    files = [rb.runbook.path, rb.source_inventory]
    # The code the runbook runs: its task files, and the modules and plugins it can call.
    code = [rb.runbook.path.parent / "tasks", collection_dir() / "plugins"]
    files += [d for d in code if d.is_dir()]
    rec = Recorder.open(store, kind="runbook", name=rb.runbook.name, environment=rb.environment,
                        plan=plan, change_id=rb.options.change_id, files=files,
                        secrets=rb.secrets)
    extravars = {**rb.extravars, "drkit_run_id": run_id, "drkit_run_dir": str(run_dir)}
    listener.runbook_started(rb, run_id)
    started = _now()
    result: engine.RunResult | None = None
    verdict = Verdict.ABORTED
    failure: str | None = None
    try:
        from drkit.remote import nodes as execution_nodes

        spread = execution_nodes(plan, rb.environment)
        common: dict[str, Any] = dict(
            inventory=rb.inventory, content_root=CONTENT_ROOT,
            extravars=extravars, artifacts_dir=run_dir, check=rb.options.check,
            listener=_Forward(listener), envvars=rb.envvars,
            cancel=(lambda: cancel.cancelled) if cancel is not None else None,
            secrets=rb.secrets,  # kept out of the run folder (issue 15)
        )
        if spread:
            # issue 18: the environment's execution nodes share its hosts (one slice each).
            result = engine.run_spread(
                rb.runbook.path, nodes=spread,
                hosts=engine.inventory_hosts(rb.inventory, rb.options.limit), **common)
        else:
            result = engine.run_playbook(rb.runbook.path, limit=rb.options.limit, **common)
        if result.status == engine.RunStatus.CANCELED:
            verdict, failure = Verdict.ABORTED, f"cancelled: {getattr(cancel, 'reason', '')}"
        elif result.ok and not any(t.status != "skipped" for t in result.tasks):
            # Every green is earned (issue 11): a run (or --check) in which no task ran on any
            # host (no host matched, every task skipped) observed nothing.
            verdict, failure = Verdict.FAIL, (
                "nothing ran: no task ran on any host (check the inventory and --limit)")
        elif result.ok:
            verdict = Verdict.PASS
        else:
            verdict = Verdict.FAIL
            # The last failure says most: a runbook's rescue ends by failing with what it did
            # about the first one ("rolled back to 1.0.0").
            failed = [t for t in result.tasks
                      if t.status in ("failed", "unreachable") and not t.ignored]
            failure = (f"task '{failed[-1].task}' failed on {failed[-1].host}: "
                       f"{failed[-1].message}" if failed else
                       str(result.failure) if result.failure else f"ansible exited {result.rc}")
    except BaseException as e:
        failure = f"{type(e).__name__}: {e}"
        _seal(rec, rb, Verdict.ABORTED, None, started, failure, listener,
              governance=governance)
        raise
    ended = _now()
    summary = dict((result.facts.get(STAT_KEY) or {}) if result else {})
    outcome = RunbookOutcome(
        id=run_id, runbook=rb.runbook.name, environment=rb.environment, verdict=verdict,
        check=rb.options.check, change_id=rb.options.change_id, started_at=started,
        ended_at=ended, hosts=rb.hosts,
        changes=tuple(Change(t.host, t.task, t.play) for t in result.tasks if t.changed)
        if result else (),
        tasks=len(result.tasks) if result else 0, failure=failure, summary=summary,
        stats=dict(result.stats) if result else {}, artifacts_dir=run_dir,
    )
    outcome = _seal(rec, rb, verdict, result, started, failure, listener, outcome,
                    governance=governance) or outcome
    listener.runbook_finished(outcome)
    return outcome


def _seal(rec: Any, rb: Prepared, verdict: Verdict, result: engine.RunResult | None,
          started: datetime, failure: str | None, listener: RunbookListener,
          outcome: RunbookOutcome | None = None, *,
          governance: Mapping[str, Any] | None = None) -> RunbookOutcome | None:
    """Close the evidence record. A store that fails here must not hide the run's outcome."""
    from dataclasses import replace

    from drkit.errors import DrkitError

    try:
        status = {Verdict.PASS: "ok", Verdict.FAIL: "failed"}.get(verdict, "aborted")
        rec.add_phase(rb.runbook.name, status=status, started_at=started,
                      ended_at=result.ended_at if result else _now(),
                      playbook=_relative(rb.runbook.path), message=failure or "",
                      run=result)
        summary: dict[str, Any] = {
            "runbook": rb.runbook.name, "check": rb.options.check,
            "hosts": list(rb.hosts), "limit": rb.options.limit,
            "operator": rb.options.operator or _operator(),
            "confirmed": rb.options.confirmed, "failure": failure,
            "governance": dict(governance or {"blackout": rb.blackout}),
            **({"changes": [{"host": c.host, "task": c.task} for c in outcome.changes],
                "result": dict(outcome.summary)} if outcome else {}),
        }
        if failure:
            summary["findings"] = [{"severity": "high", "check": f"runbook:{rb.runbook.name}",
                                    "detail": failure}]
        record = rec.seal(str(verdict), summary)
        if outcome is not None:
            return replace(outcome, evidence_id=record.id, warnings=tuple(rec.warnings))
    except DrkitError as e:
        listener.note(f"evidence: could not seal the record: {e}")
        if outcome is not None:
            return replace(outcome, evidence_error=str(e))
    return outcome


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(CONTENT_ROOT))
    except ValueError:
        return str(path)


def _operator() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


__all__ = ["Change", "Prepared", "Risk", "Runbook", "RunbookListener", "RunbookOptions",
           "RunbookOutcome", "Verdict", "catalogue", "get", "guard", "load_runbook",
           "parse_extravars", "prepare", "run"]
