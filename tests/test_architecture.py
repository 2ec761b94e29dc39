"""The shape docs/architecture.md describes holds: which way imports go, one door per outside
library, the import cycles issue 13 broke stay broken, and the CLI's conventions (`-e` is
`--env` in every command; shell completion installs and completes).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DRKIT = str(Path(sys.executable).parent / "drkit")


def _modules() -> dict[str, Path]:
    mods = {}
    for path in (REPO / "drkit").rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imports(path: Path) -> Iterator[str]:
    """Every module name an import statement names, anywhere in the file (inside functions and
    `if TYPE_CHECKING:` too: a cycle there is still a cycle in the design)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names)


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: {n for n in _imports(p) if n in mods and n != m} for m, p in mods.items()}


def test_the_two_cycles_issue_13_broke_stay_broken() -> None:
    # config <-> governance.blackout: the window grammar is the leaf drkit/windows.py.
    # evidence.store <-> evidence.s3: drkit/evidence/locator.py opens either.
    graph = _graph()
    assert not {m for m in graph["drkit.config"] if m.startswith("drkit.governance")}
    assert "drkit.evidence.s3" not in graph["drkit.evidence.store"]
    # Leaves import nothing of drkit but errors (so anything may import them).
    for leaf in ("drkit.errors", "drkit.windows", "drkit.files", "drkit.engine_shim"):
        assert graph[leaf] <= {"drkit.errors"}, (leaf, graph[leaf])


def test_imports_go_one_way_and_outside_libraries_have_one_door() -> None:
    mods = _modules()
    for name, path in mods.items():
        imported = set(_imports(path))
        if not name.startswith("drkit.cli"):
            assert not {i for i in imported if i.startswith("drkit.cli")}, \
                f"{name} imports the CLI: nothing below drkit/cli may"
        if name != "drkit.engine":
            assert not {i for i in imported if i.split(".")[0] == "ansible_runner"}, \
                f"{name} imports ansible_runner: only drkit/engine.py may"
        # drkit.state.s3: the shared run state's door to S3 (issue 18)
        if not name.startswith("drkit.evidence") and name != "drkit.state.s3":
            assert not {i for i in imported if i.split(".")[0] in ("boto3", "botocore")}, \
                f"{name} imports boto3: only the evidence code that talks to AWS may"
    # The shim is copied out and run with `python -S`: it may use the standard library only.
    shim = set(_imports(mods["drkit.engine_shim"]))
    assert not {i for i in shim if i.split(".")[0] == "drkit"}, shim


def test_runbooks_and_certs_resolve_targets_without_the_drill() -> None:
    # drkit/targets.py owns where an environment lives; a runbook or a certificate scan is not
    # a drill and does not import one to find its inventory (issue 13).
    graph = _graph()
    for name in ("drkit.runbooks", "drkit.certs"):
        assert not {m for m in graph[name] if m.startswith("drkit.drill")}, (name, graph[name])
        assert "drkit.targets" in graph[name], name
    assert not {m for m in graph["drkit.targets"] if m.startswith("drkit.drill")}


def test_one_lock_helper_and_one_atomic_write() -> None:
    # drkit/files.py holds the flock helper and the atomic write (issue 13 folded five copies
    # of the one and several of the other into them).
    for name, path in _modules().items():
        text = path.read_text(encoding="utf-8")
        if name != "drkit.files":
            assert "fcntl.flock" not in text and "LOCK_EX" not in text, \
                f"{name} takes a flock itself: use drkit.files.locked"
        if name not in ("drkit.files",) and not name.startswith("drkit.lab."):
            assert "os.rename(" not in text and "os.replace(" not in text, \
                f"{name} renames a temporary file itself: use drkit.files.atomic_write"


# ---------------------------------------------------------------- the CLI's conventions


def _commands() -> Iterator[tuple[str, Any]]:
    """Every leaf command of `drkit`, with its path ("runbook run")."""
    from typer.main import get_command

    from drkit.cli import app

    root = get_command(app)
    ctx = root.make_context("drkit", [], resilient_parsing=True)

    def walk(cmd: Any, path: list[str]) -> Iterator[tuple[str, Any]]:
        if hasattr(cmd, "list_commands"):
            for name in cmd.list_commands(ctx):
                yield from walk(cmd.get_command(ctx, name), [*path, name])
        else:
            yield " ".join(path), cmd

    yield from walk(root, [])


def test_a_short_option_means_the_same_in_every_command() -> None:
    meaning: dict[str, set[str]] = {}
    env_options = 0
    for path, cmd in _commands():
        for p in cmd.params:
            if p.param_type_name != "option":
                continue
            names = set(p.opts) | set(p.secondary_opts)
            longs = frozenset(n for n in names if n.startswith("--"))
            for short in (n for n in names if not n.startswith("--")):
                meaning.setdefault(short, set()).add(f"{'/'.join(sorted(longs))}")
            if "--env" in names:  # wherever there is an environment, -e names it
                assert "-e" in names, f"drkit {path}: --env has no -e"
                env_options += 1
    assert {k: v for k, v in meaning.items() if len(v) > 1} == {}
    assert meaning["-e"] == {"--env"} and meaning["-p"] == {"--plan"}
    assert env_options >= 8  # drill run/check/recover/request, runbook run, schedule, status...


def test_runbook_e_with_an_ansible_style_pair_says_what_to_use() -> None:
    res = subprocess.run([DRKIT, "runbook", "run", "rolling-patch", "-e", "drkit_x=1",
                          "--plan", str(REPO / "drkit.yml")], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--extra-var drkit_x=1" in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def _complete(words: str) -> list[str]:
    env = {**os.environ, "_DRKIT_COMPLETE": "complete_bash", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}
    res = subprocess.run([DRKIT], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout.split()


def test_shell_completion_completes_groups_commands_and_options() -> None:
    assert _complete("drkit dr") == ["drill"]
    assert set(_complete("drkit drill r")) >= {"run", "resume", "recover"}
    assert "--env" in _complete("drkit runbook run cert-rotation --e")
    assert set(_complete("drkit lab ")) == {"up", "down", "status"}


def test_show_and_install_completion(tmp_path: Path) -> None:
    # Typer finds the shell from the parent process (shellingham), as in a user's terminal:
    # run drkit under bash (`; true` keeps bash from exec'ing it away).
    env = {**os.environ, "HOME": str(tmp_path)}

    def under_bash(arg: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-c", f"{DRKIT} {arg}; true"], env=env,
                              capture_output=True, text=True, timeout=60)

    shown = under_bash("--show-completion")
    assert "_DRKIT_COMPLETE=complete_bash" in shown.stdout, shown.stdout + shown.stderr
    installed = under_bash("--install-completion")
    assert "bash completion installed" in installed.stdout, installed.stdout + installed.stderr
    script = tmp_path / ".bash_completions" / "drkit.sh"
    assert "_DRKIT_COMPLETE=complete_bash" in script.read_text()
    assert f"source '{script}'" in (tmp_path / ".bashrc").read_text()
    # The installed script really completes, in a bash that sources it.
    probe = subprocess.run(
        ["bash", "-c", f"source {script}; COMP_WORDS=(drkit dr); COMP_CWORD=1; "
                       "_drkit_completion drkit; echo ${COMPREPLY[@]}"],
        env={**env, "PATH": f"{Path(DRKIT).parent}:{os.environ.get('PATH', '')}"},
        capture_output=True, text=True, timeout=60)
    assert probe.stdout.split() == ["drill"], probe.stdout + probe.stderr
