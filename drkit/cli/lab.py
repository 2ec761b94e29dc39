"""`drkit lab up | down | status`: the local two-region payments lab."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import typer

from drkit.cli._common import JsonOption, PlanOption, call, load_plan, new_app, print_json
from drkit.engine import RunListener, TaskResult

if TYPE_CHECKING:
    from drkit.lab import LabStatus

app = new_app("Bring the local two-region payments lab up, down, or show it.")


class _Progress(RunListener):
    """Task names as they run: one rewritten line on a terminal, plain lines otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()
        self.t0 = time.monotonic()
        self.current = ""

    def _elapsed(self) -> str:
        return f"{time.monotonic() - self.t0:5.1f}s"

    def task_started(self, play: str, task: str, at: datetime) -> None:
        if not self.enabled:
            return
        self.current = task
        if self.tty:
            line = f"{self._elapsed()}  {task}"[:max(20, _columns() - 1)]
            sys.stderr.write("\r\033[K" + line)
            sys.stderr.flush()

    def task_finished(self, result: TaskResult) -> None:
        if not self.enabled:
            return
        # Loops report each item; show a task once, when its first result arrives.
        if result.status == "skipped" and self.tty:
            return
        mark = {"changed": "changed", "ok": "ok", "failed": "FAILED",
                "unreachable": "UNREACHABLE", "skipped": "skipped"}.get(result.status,
                                                                        result.status)
        text = f"{self._elapsed()}  {result.task} [{mark}]"
        if result.message:
            text += f": {result.message}"
        if self.tty:
            sys.stderr.write("\r\033[K" + text[:max(20, _columns() - 1)] + "\n")
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _columns() -> int:
    import shutil

    return shutil.get_terminal_size((100, 20)).columns


def _render(st: LabStatus) -> None:
    rows = [("COMPONENT", "REGION", "PID", "PORT", "HEALTH", "DETAIL")]
    for c in st.components:
        rows.append((c.name, c.region or "-", str(c.pid or "-"), str(c.port or "-"),
                     "ok" if c.healthy else "DOWN", c.detail))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        typer.echo("  ".join(r[i].ljust(widths[i]) for i in range(5)) + "  " + r[5])
    typer.echo(f"active region: {st.active_region or '-'}    state: {st.state_dir}")
    typer.echo(f"topology: {st.topology}" + (
        " (a network namespace per region, hosts over SSH)" if st.topology == "namespaces"
        else " (every region on this machine's loopback)") +
        (f"; why: {st.topology_reason}" if st.topology_reason else ""))
    _render_access(st)


def _render_access(st: LabStatus) -> None:
    """What each kind of component accepts (issue 16: a lab only its owner can use)."""
    seen: dict[str, str] = {}
    for c in st.components:
        if c.accepts and c.kind not in seen:
            seen[c.kind] = c.accepts
    for kind, accepts in seen.items():
        typer.echo(f"accepts: {kind}: {accepts}")


@app.command()
def up(plan: PlanOption = None, as_json: JsonOption = False,
       quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines.")) -> None:
    """Build the lab (moto, PostgreSQL primary + standby, payments APIs, HAProxy TLS entry).

    Idempotent: on a running lab it changes nothing and says so; on a half-up lab it restarts
    what is down. A lab a drill left failed over is not "repaired" (that would lose its data):
    it says to run `drkit drill recover`. Exit 2 when another command is changing the lab
    (it names it), 3 when the environment is not fit (port in use, binaries missing).
    """
    from drkit import lab

    p = load_plan(plan)
    progress = _Progress(enabled=not as_json and not quiet)
    try:
        st = call(lab.up, p, listener=progress)
    finally:
        progress.close()
    if as_json:
        print_json(st.to_json())
        return
    _render(st)
    typer.echo(f"{st.message} ({st.duration_s:.1f}s; run log {st.run_dir})")


@app.command()
def down(plan: PlanOption = None, as_json: JsonOption = False,
         quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines.")) -> None:
    """Stop every process the lab started, free its ports, remove its state.

    Every process the lab's playbooks start carries the lab's marker, so none is left behind
    whatever pid files say. Exit 2 when another command is changing the lab (it names it).
    """
    from drkit import lab

    p = load_plan(plan)
    progress = _Progress(enabled=not as_json and not quiet)
    try:
        st = call(lab.down, p, listener=progress)
    finally:
        progress.close()
    if as_json:
        print_json(st.to_json())
        return
    typer.echo(f"{st.message} ({st.duration_s:.1f}s)")


@app.command()
def status(plan: PlanOption = None, as_json: JsonOption = False) -> None:
    """Show each component with pid, port and health, and which region serves traffic.

    Read-only: never waits for a command that is changing the lab, and names it. The last line
    says what to run: `drkit lab up` for what is down, `drkit drill recover` for a lab a drill
    left failed over or half recovered. Exit 0 when every component is healthy and the lab is
    in its normal topology, 1 otherwise.
    """
    from drkit import lab

    p = load_plan(plan)
    st: Any = call(lab.status, p)
    advice = call(lab.advice, p, st)
    if as_json:
        print_json({**st.to_json(), "advice": advice})
    else:
        _render(st)
        if st.busy:
            typer.echo(f"busy: {st.busy}")
        typer.echo(advice)
    if not st.up or st.drift:
        raise typer.Exit(1)
