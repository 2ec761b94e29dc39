"""The one door to Ansible: run a playbook through ansible-runner and return a typed result.

Only this module imports ansible_runner. It streams events to a `RunListener` (live progress,
evidence) and builds per-play and per-task timings from the events themselves, never from stdout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drkit.errors import RunFailed

if TYPE_CHECKING:
    from drkit.remote import Node

# Events that end a task on one host; each carries start, end and duration in event_data.
_TASK_END = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_skipped": "skipped",
    "runner_on_unreachable": "unreachable",
}


class RunStatus(StrEnum):
    SUCCESSFUL = "successful"
    FAILED = "failed"
    CANCELED = "canceled"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class TaskResult:
    play: str
    task: str
    host: str
    status: str  # ok, changed, failed, skipped, unreachable
    started_at: datetime
    ended_at: datetime
    duration_s: float
    message: str = ""
    ignored: bool = False
    action: str = ""

    @property
    def changed(self) -> bool:
        return self.status == "changed"


@dataclass(frozen=True)
class PlayResult:
    name: str
    started_at: datetime
    ended_at: datetime

    @property
    def duration_s(self) -> float:
        return (self.ended_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class Failure:
    play: str
    task: str
    host: str
    message: str

    def __str__(self) -> str:
        return f"task '{self.task}' failed on {self.host}: {self.message}"


@dataclass(frozen=True)
class HostStats:
    ok: int = 0
    changed: int = 0
    failures: int = 0
    unreachable: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0


@dataclass(frozen=True)
class RunResult:
    playbook: Path
    status: RunStatus
    rc: int
    started_at: datetime
    ended_at: datetime
    plays: tuple[PlayResult, ...]
    tasks: tuple[TaskResult, ...]
    stats: Mapping[str, HostStats]
    artifacts_dir: Path
    failure: Failure | None = None
    facts: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == RunStatus.SUCCESSFUL and self.rc == 0

    @property
    def duration_s(self) -> float:
        return (self.ended_at - self.started_at).total_seconds()

    @property
    def changed(self) -> int:
        return sum(s.changed for s in self.stats.values())

    @property
    def stdout_path(self) -> Path:
        return self.artifacts_dir / "stdout"

    @property
    def events_path(self) -> Path:
        return self.artifacts_dir / "job_events.jsonl"

    def stat_values(self, name: str) -> Any:
        """Values a playbook published with `ansible.builtin.set_stats` (data: {name: ...})."""
        return self.facts.get(name)


class RunListener:
    """Observer of one playbook run. Every hook does nothing by default; override what you need."""

    def play_started(self, name: str, at: datetime) -> None:  # noqa: B027
        pass

    def task_started(self, play: str, task: str, at: datetime) -> None:  # noqa: B027
        pass

    def task_finished(self, result: TaskResult) -> None:  # noqa: B027
        pass


def _ts(value: str | None) -> datetime:
    if not value:
        return datetime.now(UTC)
    dt = datetime.fromisoformat(value)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _message(res: Mapping[str, Any]) -> str:
    if res.get("_ansible_no_log"):
        return "(output hidden by no_log)"
    # A loop's own msg is "One or more items failed": say which item, and what it said.
    for item in res.get("results") or ():
        if isinstance(item, Mapping) and item.get("failed"):
            label = item.get("_ansible_item_label", item.get("item", "?"))
            return f"item {label!r}: {_message(item) or 'failed'}"
    texts: list[list[str]] = []
    for key in ("msg", "stderr", "reason"):
        value = res.get(key)
        if value:
            text = value if isinstance(value, str) else json.dumps(value)
            texts.append(text.strip().splitlines())
    # Terraform's diagnostics end in box-drawing lines; its "Error: ..." line is the news,
    # whether the module put it in msg (community.general.terraform) or stderr (a command).
    for lines in texts:
        for line in lines:
            if line.lstrip("│ ").startswith("Error: "):
                return line.lstrip("│ ")
    for lines in texts:
        if lines:
            return lines[-1]
    return ""


def _censor(text: str) -> str:
    """A failed no_log task's stdout without the `[ERROR]: Task failed: <msg>` header.

    ansible-core 2.19 censors the result but still prints the failure message above it (a
    `fail` or module msg built from a secret reaches stdout and job events); keep what
    follows from `Origin:` or the `fatal:`/`failed:` line on (issue 7).
    """
    lines = text.split("\n")
    if not lines or not lines[0].startswith("[ERROR]:"):
        return text
    for i, line in enumerate(lines):
        if line.startswith(("Origin:", "fatal: [", "failed: [")):
            return "\n".join(["[ERROR]: Task failed (message hidden by no_log)\r", *lines[i:]])
    return "[ERROR]: Task failed (message hidden by no_log)"


class _Collector:
    """Turns the runner's event stream into plays, tasks and stats, and feeds the listener."""

    def __init__(self, listener: RunListener | None, events_file: Path,
                 secrets: Sequence[str] = ()) -> None:
        self.listener = listener
        from drkit.evidence.redact import redact_data

        self.events = os.fdopen(_open_private(events_file), "w", encoding="utf-8")
        self.secrets, self.redact = tuple(secrets), redact_data
        self.censored: list[tuple[str, str]] = []  # (stdout as printed, without the secret)
        self.plays: list[tuple[str, datetime]] = []
        self.tasks: list[TaskResult] = []
        self.stats: dict[str, HostStats] = {}
        self.set_stats: dict[str, Any] = {}
        self.failure: Failure | None = None
        self.lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> bool:
        with self.lock:
            res = (event.get("event_data") or {}).get("res")
            text = event.get("stdout")
            if isinstance(res, Mapping) and "censored" in res and isinstance(text, str):
                clean = _censor(text)
                if clean != text:
                    self.censored.append((text, clean))
                    event = {**event, "stdout": clean}
            # The run folder is evidence too (issue 15): its copy is redacted as records are.
            self.events.write(json.dumps(self.redact(event, self.secrets), default=str) + "\n")
            name = event.get("event", "")
            data = event.get("event_data", {})
            at = _ts(event.get("created"))
            if name == "playbook_on_play_start":
                play = data.get("play", "")
                self.plays.append((play, at))
                if self.listener:
                    self.listener.play_started(play, at)
            elif name == "playbook_on_task_start":
                if self.listener and not data.get("is_conditional"):
                    self.listener.task_started(data.get("play", ""), data.get("task", ""), at)
            elif name in _TASK_END:
                self._task_end(name, data)
            elif name == "playbook_on_stats":
                self._stats(data)
        return False  # ansible-runner writes its own job_events/ only if we ask: we keep ours

    def _task_end(self, name: str, data: Mapping[str, Any]) -> None:
        res = data.get("res") or {}
        status = _TASK_END[name]
        if status == "ok" and res.get("changed"):
            status = "changed"
        started, ended = _ts(data.get("start")), _ts(data.get("end"))
        result = TaskResult(
            play=data.get("play", ""),
            task=data.get("task", ""),
            host=data.get("host", ""),
            status=status,
            started_at=started,
            ended_at=ended,
            duration_s=float(data.get("duration") or (ended - started).total_seconds()),
            message=_message(res) if status in ("failed", "unreachable") else "",
            ignored=bool(data.get("ignore_errors")),
            action=data.get("task_action", ""),
        )
        self.tasks.append(result)
        if status in ("failed", "unreachable") and not result.ignored and self.failure is None:
            self.failure = Failure(result.play, result.task, result.host, result.message)
        if self.listener:
            self.listener.task_finished(result)

    def _stats(self, data: Mapping[str, Any]) -> None:
        hosts: set[str] = set()
        for key in ("ok", "changed", "failures", "dark", "skipped", "rescued", "ignored"):
            hosts.update((data.get(key) or {}).keys())
        for host in sorted(hosts):
            self.stats[host] = HostStats(
                ok=(data.get("ok") or {}).get(host, 0),
                changed=(data.get("changed") or {}).get(host, 0),
                failures=(data.get("failures") or {}).get(host, 0),
                unreachable=(data.get("dark") or {}).get(host, 0),
                skipped=(data.get("skipped") or {}).get(host, 0),
                rescued=(data.get("rescued") or {}).get(host, 0),
                ignored=(data.get("ignored") or {}).get(host, 0),
            )
        custom = data.get("artifact_data") or {}
        self.set_stats.update(custom)

    def close(self) -> None:
        self.events.close()


# ansible-playbook must not outlive drkit: drkit/engine_shim.py, first on the run's PATH, starts
# the real one and kills it and its workers when drkit dies or cancels (the why is in its
# docstring). It is copied in behind this interpreter, with -S, as `bin/ansible-playbook`.
_SHIM = Path(__file__).with_name("engine_shim.py")


def _stop_shim(shim_dir: Path, timeout: float = 5.0) -> None:
    """Ask this run's shim to kill everything below it, before ansible-runner SIGKILLs its
    process group (which the shim could not act on, and which misses setsid() workers)."""
    import time

    marker = str(shim_dir / "ansible-playbook").encode()
    mine = str(os.getpid())
    shims = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                ppid = f.read().rsplit(b")", 1)[1].split()[1].decode()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read()
        except (OSError, IndexError):
            continue
        if ppid == mine and marker in cmd:
            shims.append(int(name))
    for pid in shims:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while shims and time.monotonic() < deadline:
        shims = [p for p in shims if os.path.exists(f"/proc/{p}") and not _zombie(p)]
        time.sleep(0.05)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return True


def _shim_dir(private: Path) -> Path:
    bindir = private / "bin"
    bindir.mkdir(mode=0o700)
    shim = bindir / "ansible-playbook"
    # The shim runs the ansible-playbook beside its interpreter: this one's, drkit's.
    shim.write_text(f"#!{sys.executable} -S\n" + _SHIM.read_text(encoding="utf-8"))
    shim.chmod(0o700)
    return bindir


# Where drkit's own Ansible content lives: next to the package (the repository, or the tree the
# package was installed from), never wherever the plan or the current directory happens to be.
# Without this a plan outside the checkout ran with no drkit modules: ansible-playbook failed
# before its first play and the readiness check said PASS (issue 11).
CONTENT = Path(__file__).resolve().parents[1]
# drkit's modules and plugins are the drkit.dr collection (collections/), called by FQCN; a plan
# may still bring loose modules of its own in its playbooks/library etc.
_CONTENT_PATHS = {
    "ANSIBLE_LIBRARY": "playbooks/library",
    "ANSIBLE_ACTION_PLUGINS": "playbooks/action",
    "ANSIBLE_MODULE_UTILS": "playbooks/module_utils",
    "ANSIBLE_ROLES_PATH": "playbooks/roles",
    "ANSIBLE_COLLECTIONS_PATH": "collections",
}


def content_env(content_root: Path | None = None) -> dict[str, str]:
    """ANSIBLE_* search paths for drkit's modules, action plugins, module_utils, roles and
    collections: the package's content first, then the plan's own (when it has any)."""
    env: dict[str, str] = {}
    roots = [CONTENT] + ([content_root.resolve()] if content_root is not None
                         and content_root.resolve() != CONTENT else [])
    for var, rel in _CONTENT_PATHS.items():
        paths = [str(r / rel) for r in roots if (r / rel).is_dir()]
        if var == "ANSIBLE_COLLECTIONS_PATH":
            # Keep the defaults (the user's and the system's collections) after ours.
            paths += [str(Path.home() / ".ansible" / "collections"),
                      "/usr/share/ansible/collections"]
        if paths:
            env[var] = os.pathsep.join(paths)
    return env


def _ansible_env(content_root: Path, extra: Mapping[str, str] | None,
                 shim: Path | None = None) -> dict[str, str]:
    bindir = str(Path(sys.executable).parent)
    path = bindir + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin")
    env = {
        # ansible-playbook must come from the same environment as drkit (and its collections).
        "PATH": (str(shim) + os.pathsep + path) if shim else path,
        "DRKIT_PARENT_PID": str(os.getpid()),
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_GATHERING": "explicit",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
        "ANSIBLE_NOCOLOR": "True",
        # set_stats values reach playbook_on_stats' artifact_data only when this is on.
        "ANSIBLE_SHOW_CUSTOM_STATS": "True",
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "yaml",
        **content_env(content_root),
    }
    cfg = content_root / "ansible.cfg"
    if cfg.is_file():
        env["ANSIBLE_CONFIG"] = str(cfg)
    if extra:
        env.update(extra)
    return env


PRIVATE_PREFIX = "drkit-run-"
OWNER_FILE = ".drkit-owner"


def _mark_owner(private: Path) -> None:
    """Who uses a private run folder (pid and its start time): a run killed with SIGKILL
    cannot delete its folder, which holds env/extravars and the whole environment of
    ansible-playbook; remove_abandoned_private_dirs() (drill recover) finds it by this."""
    from drkit.evidence.recorder import pid_start

    pid = os.getpid()
    fd = os.open(private / OWNER_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{pid} {pid_start(pid) or ''}\n")


def remove_abandoned_private_dirs(tmp: Path | None = None) -> list[Path]:
    """Delete the private run folders of runs whose process is gone (issue 15: a killed drill
    left its full environment in a temporary folder). Only folders this user owns, with an
    owner mark, whose pid is dead or reused; returns what it removed."""
    from drkit.evidence.recorder import pid_alive

    root = Path(tmp or tempfile.gettempdir())
    removed = []
    for d in root.glob(f"{PRIVATE_PREFIX}*"):
        try:
            st = d.lstat()
            if not d.is_dir() or d.is_symlink() or st.st_uid != os.getuid():
                continue
            pid_s, _, start_s = (d / OWNER_FILE).read_text().strip().partition(" ")
            pid, start = int(pid_s), int(start_s) if start_s else None
        except (OSError, ValueError):
            continue
        if pid_alive(pid, start):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def _write_extravars(private: Path, extravars: Mapping[str, Any]) -> None:
    """env/extravars as YAML with every string `!unsafe`: no value drkit passes (plan values,
    `-e` from the command line) is ever templated by Ansible (issue 16). ansible-runner passes
    the file with `-e @env/extravars` when it exists."""
    from drkit.extravars import dump_unsafe
    from drkit.files import atomic_write

    env = private / "env"
    env.mkdir(mode=0o700, exist_ok=True)
    atomic_write(env / "extravars", dump_unsafe(extravars).encode("utf-8"), mode=0o600)


def _open_private(path: Path) -> int:
    """A run-folder file, created 0600 (never through a link), truncated."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    os.fchmod(fd, 0o600)
    return fd


def _run_secrets(secrets: Sequence[str], extravars: Mapping[str, Any] | None,
                 envvars: Mapping[str, str] | None) -> tuple[str, ...]:
    """What must not reach the run folder: the caller's secrets (lab access keys, canary
    secrets), environment variables with secret names (AWS keys) and extra vars with secret
    names, at any depth."""
    from drkit.evidence.redact import env_secrets, is_secret_name

    known = [*secrets, *env_secrets(envvars or {}), *env_secrets(os.environ)]

    def walk(v: Any, secret: bool) -> None:
        if isinstance(v, Mapping):
            for k, x in v.items():
                walk(x, secret or is_secret_name(str(k)))
        elif isinstance(v, list | tuple):
            for x in v:
                walk(x, secret)
        elif secret and isinstance(v, str | int) and not isinstance(v, bool):
            known.append(str(v))

    walk(extravars or {}, False)
    return tuple(dict.fromkeys(known))


def run_playbook(
    playbook: Path,
    *,
    inventory: Path,
    content_root: Path,
    extravars: Mapping[str, Any] | None = None,
    artifacts_dir: Path,
    check: bool = False,
    limit: str | None = None,
    tags: Sequence[str] = (),
    listener: RunListener | None = None,
    cancel: Callable[[], bool] | None = None,
    envvars: Mapping[str, str] | None = None,
    forks: int = 10,
    node: Node | None = None,
    secrets: Sequence[str] = (),
) -> RunResult:
    """Run one playbook and return its result. Raises RunFailed only when Ansible cannot start.

    Artifacts (stdout, job_events.jsonl) land in `artifacts_dir`. Extra vars travel through a
    private temporary directory that is deleted afterwards, so secrets never reach the artifacts.
    With `node` the playbook runs on that execution node through ansible-runner's streaming
    interface (issue 18: _run_streamed); the result is built from the same events.
    """
    import ansible_runner  # heavy: imported only when a playbook really runs

    if not playbook.is_file():
        raise RunFailed(f"playbook {playbook} does not exist (check the plan's phases)",
                        exit_code=2)
    # umask 077 for the run folder: it holds what the run printed (issue 15).
    artifacts_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(artifacts_dir, 0o700)
    known = _run_secrets(secrets, extravars, envvars)
    collector = _Collector(listener, artifacts_dir / "job_events.jsonl", known)
    cmdline = []
    if check:
        cmdline.append("--check")
    if tags:
        cmdline += ["--tags", ",".join(tags)]
    private = Path(tempfile.mkdtemp(prefix=PRIVATE_PREFIX))
    os.chmod(private, 0o700)
    _mark_owner(private)
    shim = _shim_dir(private)
    _write_extravars(private, extravars or {})
    started = datetime.now(UTC)
    try:
        if node is not None:
            runner: Any = _run_streamed(
                node, private, playbook=playbook, inventory=inventory,
                content_root=content_root, cmdline=" ".join(cmdline) or None, limit=limit,
                forks=forks, envvars=envvars, collector=collector, cancel=cancel)
        else:
            runner = ansible_runner.run(
                private_data_dir=str(private),
                artifact_dir=str(private / "artifacts"),
                ident="run",
                playbook=str(playbook.resolve()),
                inventory=str(inventory.resolve()),
                extravars=None,  # in env/extravars, every string !unsafe (_write_extravars)
                cmdline=" ".join(cmdline) or None,
                limit=limit,
                forks=forks,
                envvars=_ansible_env(content_root, envvars, shim),
                project_dir=str(content_root),
                quiet=True,
                event_handler=collector,
                cancel_callback=_cancel_with(cancel, shim),
            )
    except RunFailed:
        raise
    except Exception as e:  # ansible-runner raises bare exceptions on a broken setup
        raise RunFailed(f"could not start ansible-playbook for {playbook.name}: {e}") from e
    finally:
        collector.close()
        ended = datetime.now(UTC)
        produced = private / "artifacts" / "run"
        stdout = produced / "stdout"
        if stdout.is_file():
            # bytes, not read_text(): its newline translation would turn the \r\n in the
            # printed text into \n and nothing would match
            data = stdout.read_bytes()
            for printed, clean in collector.censored:  # the no_log failure messages
                data = data.replace(printed.encode(), clean.encode())
            from drkit.evidence.redact import redact_text

            text = redact_text(data.decode("utf-8", "surrogateescape"), known)
            with os.fdopen(_open_private(artifacts_dir / "stdout"), "wb") as f:
                f.write(text.encode("utf-8", "surrogateescape"))
        # The runner's private dir holds env/extravars (maybe secrets) and artifacts/run/command
        # (the whole environment): neither may outlive the run.
        shutil.rmtree(private, ignore_errors=True)

    plays: list[PlayResult] = []
    for i, (name, at) in enumerate(collector.plays):
        end = collector.plays[i + 1][1] if i + 1 < len(collector.plays) else ended
        plays.append(PlayResult(name, at, end))
    status = RunStatus(runner.status) if runner.status in RunStatus._value2member_map_ else (
        RunStatus.FAILED
    )
    failure = collector.failure
    if status == RunStatus.FAILED and failure is None:
        failure = Failure("", "", "", _tail(artifacts_dir / "stdout"))
    return RunResult(
        playbook=playbook,
        status=status,
        rc=runner.rc if runner.rc is not None else 1,
        started_at=started,
        ended_at=ended,
        plays=tuple(plays),
        tasks=tuple(collector.tasks),
        stats=collector.stats,
        artifacts_dir=artifacts_dir,
        failure=failure,
        facts=collector.set_stats,
    )


@dataclass
class _Streamed:
    """What a streamed run ended with (the local Runner's status and rc)."""

    status: str
    rc: int | None


def _node_env(node: Node, content_root: Path, extra: Mapping[str, str] | None) -> dict[str, str]:
    """The run's environment as the node must see it: its Python's ansible-playbook first on
    PATH, drkit's content paths under the node's content root. No shim: it would be a
    controller's file; on the node the worker's own process group carries the run."""
    env = _ansible_env(content_root, extra)
    here = str(CONTENT)
    for key, value in list(env.items()):
        if key.startswith("ANSIBLE_") and here in value:
            env[key] = value.replace(here, node.content_root)
    bindir = node.python_bindir()
    env["PATH"] = os.pathsep.join(p for p in (bindir, "/usr/local/bin", "/usr/bin", "/bin") if p)
    env.pop("DRKIT_PARENT_PID", None)
    return env


def _run_streamed(node: Node, private: Path, *, playbook: Path, inventory: Path,
                  content_root: Path, cmdline: str | None, limit: str | None, forks: int,
                  envvars: Mapping[str, str] | None, collector: _Collector,
                  cancel: Callable[[], bool] | None) -> _Streamed:
    """transmit (here) -> `ssh node python -m ansible_runner worker` -> process (here).

    The job's private folder travels in the stream (extra vars, the inventory copied into it,
    as AWX sends its jobs); the playbook and drkit's content are the node's own copy, at the
    node's content root. Events come back through the same collector as a local run's, and
    ansible-runner's artifacts (stdout, rc, status) are unpacked into private/artifacts/run.
    """
    import contextlib
    import subprocess

    import ansible_runner

    inv = private / "inventory"
    if inventory.is_dir():
        shutil.copytree(inventory, inv, symlinks=False)
    else:
        inv.mkdir(mode=0o700)
        shutil.copyfile(inventory, inv / inventory.name)
    kwargs: dict[str, Any] = {
        "ident": "run", "playbook": node.path(playbook),
        # absolute, so transmit sees a file and sends it relative to the private folder
        "inventory": str(inv),
        "cmdline": cmdline, "limit": limit, "forks": forks, "quiet": True,
        "envvars": _node_env(node, content_root, envvars),
        "project_dir": node.path(content_root),
    }
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    err = private / "ssh.stderr"
    with err.open("wb") as errf:
        proc = subprocess.Popen(node.worker_argv(), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=errf, start_new_session=True)
    stop = threading.Event()
    # Remembered, not asked again at the end: a cancel callback may say "cancel" only while
    # its condition holds (a gate refused, a process seen), and ending the stream ends that.
    cancelled = threading.Event()

    def watch() -> None:
        while not stop.wait(0.25):
            if cancel is not None and cancel():
                cancelled.set()
                proc.terminate()
                return

    watcher = threading.Thread(target=watch, name="drkit-remote-cancel", daemon=True)
    watcher.start()
    try:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            ansible_runner.run(private_data_dir=str(private), streamer="transmit",
                               _output=proc.stdin, **kwargs)
            # stdin stays open until the run ends: the node (drkit.node_worker) reads its
            # end-of-file as "the controller cancelled or is gone" and stops the run.
        except (BrokenPipeError, OSError):
            pass  # ssh is gone: the processor reads its empty stream and says so
        processor = ansible_runner.run(
            private_data_dir=str(private), streamer="process", _input=proc.stdout,
            artifact_dir=str(private / "artifacts" / "run"), ident="run", quiet=True,
            event_handler=collector)
        with contextlib.suppress(OSError):
            proc.stdin.close()
        proc.wait()
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rc_file = private / "artifacts" / "run" / "rc"
    try:
        rc: int | None = int(rc_file.read_text().strip())
    except (OSError, ValueError):
        rc = None
    status = processor.status
    if rc is None:
        tail = err.read_text(errors="replace").strip().splitlines()[-1:] if err.is_file() else []
        why = tail[0] if tail else f"ssh exited {proc.returncode}"
        if cancelled.is_set() or (cancel is not None and cancel()):
            return _Streamed("canceled", 1)
        raise RunFailed(f"execution node {node.name}: no result from ansible-runner worker "
                        f"({why}); check the node (ssh, drkit installed at {node.python})")
    return _Streamed(status if status in RunStatus._value2member_map_ else "failed", rc)


def _cancel_with(cancel: Callable[[], bool] | None,
                 shim: Path) -> Callable[[], bool] | None:
    if cancel is None:
        return None

    def check() -> bool:
        if cancel():
            _stop_shim(shim)
            return True
        return False

    return check


def _tail(path: Path, lines: int = 3) -> str:
    """What ansible-playbook said when it failed before any task (syntax errors, unknown
    modules): its first error line, or the last lines of stdout."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "ansible-playbook produced no output"
    for i, line in enumerate(text):
        if line.startswith(("[ERROR]", "ERROR!")):
            more = [t.strip() for t in text[i + 1:i + 3] if t.strip() and not t.startswith(" ")]
            return " ".join([line.strip(), *more])
    return " ".join(line.strip() for line in text[-lines:]) or "ansible-playbook failed"


def versions() -> dict[str, str]:
    """Versions of ansible-core and the collections drkit uses, for evidence records."""
    from importlib import metadata

    found: dict[str, str] = {}
    for dist in ("ansible-core", "ansible-runner", "ansible"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    try:
        import ansible_collections  # namespace package shipped by the `ansible` distribution

        roots = [Path(p) for p in ansible_collections.__path__]
    except ImportError:
        roots = []
    for coll in ("amazon/aws", "community/aws", "community/crypto"):
        for root in roots:
            manifest = root / coll / "MANIFEST.json"
            if manifest.is_file():
                info = json.loads(manifest.read_text())["collection_info"]
                found[coll.replace("/", ".")] = info["version"]
                break
    return found


# ---------------------------------------------------------------------------------------------
# Several execution nodes (issue 18): a large inventory split across them


def inventory_hosts(inventory: Path, limit: str | None = None) -> list[str]:
    """The hosts an inventory (and --limit) selects, as ansible-inventory lists them."""
    import subprocess

    argv = [str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(inventory),
            "--list"]
    if limit:
        argv += ["--limit", limit]
    try:
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False,
                            env={**os.environ, "ANSIBLE_NOCOLOR": "1"})
        data = json.loads(cp.stdout) if cp.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError) as e:
        raise RunFailed(f"cannot list the hosts of {inventory}: {e}", exit_code=2) from e
    if data is None:
        raise RunFailed(f"cannot list the hosts of {inventory}: "
                        f"{cp.stderr.strip()[-300:]}", exit_code=2)
    return sorted((data.get("_meta") or {}).get("hostvars", {}).keys() |
                  {h for g in data.values() if isinstance(g, dict) for h in g.get("hosts", [])})


class _Serialized(RunListener):
    """One listener fed by several runs at once: its hooks are called one at a time."""

    def __init__(self, inner: RunListener) -> None:
        self.inner, self.lock = inner, threading.Lock()

    def play_started(self, name: str, at: datetime) -> None:
        with self.lock:
            self.inner.play_started(name, at)

    def task_started(self, play: str, task: str, at: datetime) -> None:
        with self.lock:
            self.inner.task_started(play, task, at)

    def task_finished(self, result: TaskResult) -> None:
        with self.lock:
            self.inner.task_finished(result)


def run_spread(playbook: Path, *, nodes: Sequence[Node], hosts: Sequence[str],
               artifacts_dir: Path, listener: RunListener | None = None,
               **kwargs: Any) -> RunResult:
    """Run `playbook` over `hosts` split across `nodes` (contiguous slices, one streamed run
    per node with --limit, all at once) and merge the results into one RunResult, as a runbook
    over a large fleet does. Each node's artifacts are in artifacts_dir/<n>-<region>/; stdout
    and job_events.jsonl are concatenated in node order."""
    from concurrent.futures import ThreadPoolExecutor

    if not nodes:
        raise RunFailed("run_spread needs at least one execution node", exit_code=2)
    if not hosts:
        raise RunFailed(f"no host to run {playbook.name} on (check the inventory and --limit)",
                        exit_code=2)
    n = min(len(nodes), len(hosts))
    size = -(-len(hosts) // n)
    slices = [list(hosts[i * size:(i + 1) * size]) for i in range(n)]
    shared = _Serialized(listener) if listener is not None else None
    artifacts_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # evidence too (issue 15)

    def one(i: int) -> RunResult:
        return run_playbook(playbook, artifacts_dir=artifacts_dir / f"{i}-{nodes[i].region}",
                            limit=",".join(slices[i]), node=nodes[i], listener=shared,
                            **kwargs)

    with ThreadPoolExecutor(max_workers=n) as pool:
        parts = list(pool.map(one, range(n)))
    for name in ("stdout", "job_events.jsonl"):
        fd = os.open(artifacts_dir / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                src = part.artifacts_dir / name
                if src.is_file():
                    out.write(src.read_bytes())
    stats: dict[str, HostStats] = {}
    facts: dict[str, Any] = {}
    for part in parts:
        stats.update(part.stats)
        facts.update(part.facts)
    order = [RunStatus.CANCELED, RunStatus.TIMEOUT, RunStatus.FAILED, RunStatus.SUCCESSFUL]
    status = next(s for s in order if any(p.status == s for p in parts))
    return RunResult(
        playbook=playbook, status=status, rc=max(p.rc for p in parts),
        started_at=min(p.started_at for p in parts), ended_at=max(p.ended_at for p in parts),
        plays=parts[0].plays, tasks=tuple(t for p in parts for t in p.tasks), stats=stats,
        artifacts_dir=artifacts_dir, failure=next((p.failure for p in parts if p.failure),
                                                  None), facts=facts)
