"""`drkit runbook list | run`: on-call runbooks with check mode, change ids and guard rails."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from typing import Annotated, Any, TextIO

import typer

from drkit.cli._common import (
    JsonOption,
    LiveLines,
    PlanOption,
    cancel_on_signals,
    errors,
    load_plan,
    new_app,
    print_json,
)
from drkit.runbooks import RunbookListener

app = new_app("On-call runbooks (cert rotation, rolling patch) with check mode and guard rails.")


class Progress(RunbookListener, LiveLines):
    """Live progress of a runbook: one line per finished task (and host), a live status line on
    a terminal. Built on the library's listener hooks; it never decides anything."""

    def __init__(self, out: TextIO) -> None:
        LiveLines.__init__(self, out)
        self.t0 = time.monotonic()
        self.current = ""

    # RunbookListener hooks ------------------------------------------------------------------
    def runbook_started(self, rb: Any, run_id: str) -> None:
        mode = " in check mode (nothing will change)" if rb.options.check else ""
        change = f", change {rb.options.change_id}" if rb.options.change_id else ""
        hosts = ", ".join(rb.hosts[:6]) + (f" (+{len(rb.hosts) - 6})" if len(rb.hosts) > 6
                                           else "")
        self._line(f"runbook {rb.runbook.name} on {rb.environment}{mode}{change}: {hosts}")
        self._line(f"  run {run_id}")
        self.start_live()

    def play_started(self, name: str, at: datetime) -> None:
        self._line(f"  play: {name}")

    def task_started(self, play: str, task: str, at: datetime) -> None:
        self.current = task

    def task_finished(self, result: Any) -> None:
        if result.status == "skipped":
            return
        mark = {"ok": "ok", "changed": "changed", "failed": "FAILED",
                "unreachable": "UNREACHABLE"}.get(result.status, result.status)
        msg = f": {result.message}" if result.message else ""
        self._line(f"  {self._elapsed()} {result.host:<16} {result.task} [{mark}]{msg}")

    def note(self, message: str) -> None:
        self._line(f"  note: {message}")

    def runbook_finished(self, outcome: Any) -> None:
        self.close()

    def close(self) -> None:
        self.stop_live()

    # rendering --------------------------------------------------------------------------------
    def _elapsed(self) -> str:
        return f"{time.monotonic() - self.t0:6.1f}s"

    def _status(self) -> Any:
        from rich.text import Text

        return Text(f"  > {self._elapsed()} {self.current or 'starting'}")



@app.command("list")
def list_(plan: PlanOption = None, as_json: JsonOption = False) -> None:
    """The catalogue: name, purpose, risk and required variables of every runbook."""
    from drkit import runbooks

    with errors():
        p = _maybe_plan(plan)
        books = runbooks.catalogue(p)
    if as_json:
        print_json({"runbooks": [b.to_json() for b in books]})
        return
    for b in books:
        typer.echo(f"{b.name}  [risk: {b.risk}]")
        typer.echo(f"    {b.purpose}")
        if b.risk_note:
            typer.echo(f"    risk: {b.risk_note}")
        typer.echo("    requires: " + (", ".join(v.name for v in b.requires) or "-"))
        if b.optional:
            typer.echo("    optional: " + ", ".join(f"{v.name} {v.note}".strip()
                                                    for v in b.optional))


def _maybe_plan(plan: Any) -> Any:
    """The catalogue can be listed without a plan (drkit's own runbooks)."""
    from drkit.config import load_plan as _load
    from drkit.config import plan_path

    if plan is None and not plan_path(None).is_file():
        return None
    return _load(plan)


@app.command()
def run(
    name: Annotated[str, typer.Argument(help="Runbook name (see `drkit runbook list`).")],
    env: Annotated[str, typer.Option("--env", "-e", help="Environment from the plan.")],
    limit: Annotated[str | None, typer.Option(
        "--limit", "-l", help="Only these hosts or groups (Ansible pattern).")] = None,
    check: Annotated[bool, typer.Option(
        "--check", help="Ansible check mode: show what would change, change nothing.")] = False,
    change_id: Annotated[str | None, typer.Option(
        "--change-id", help="Change that authorises the run (required on protected "
        "environments); recorded in the evidence.")] = None,
    override_blackout: Annotated[str | None, typer.Option(
        "--override-blackout", metavar="REASON",
        help="Run inside a blackout window; the reason goes into the evidence.")] = None,
    force_during_drill: Annotated[str | None, typer.Option(
        "--force-during-drill", metavar="REASON",
        help="Run inside the plan's change freeze around a drill (change_freeze); the reason "
        "goes into the evidence. A drill that is running still excludes the run.")] = None,
    yes: Annotated[bool, typer.Option(
        "--yes", "-y", help="Do not ask for confirmation on a protected environment.")] = False,
    extra: Annotated[list[str] | None, typer.Option(
        "--extra-var", help="KEY=VALUE for the runbook (repeatable). Not -e: in every drkit "
        "command -e is --env.")] = None,
    store: Annotated[str | None, typer.Option(
        "--store", help="Evidence store (default: the plan's evidence.store).")] = None,
    plan: PlanOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run a runbook through Ansible with live progress; every run leaves an evidence record.

    On a protected environment a change id is required, and the run asks for confirmation
    (unattended runs need --yes). Exit codes: 0 done, 1 the runbook failed (and rolled back
    what it could), 2 bad input (unknown runbook, missing variable, --limit matching no
    host, no change id or confirmation; another command is changing the environment, named in
    the message; the plan's change freeze around a drill), 3 it could not run or was
    interrupted.
    """
    from drkit import runbooks
    from drkit.drill import CancelToken
    from drkit.errors import BadInput

    p = load_plan(plan)
    with errors():
        if "=" in env:  # Ansible's habit (-e KEY=VALUE); an environment name has no '='
            raise BadInput(f"-e/--env {env!r} looks like an extra var: in drkit -e is --env, "
                           f"as in every command; pass --extra-var {env}")
        options = runbooks.RunbookOptions(
            check=check, limit=limit, change_id=change_id, confirmed=yes,
            extravars=runbooks.parse_extravars(extra or []), evidence_store=store,
            override_blackout=override_blackout, force_during_drill=force_during_drill)
        runbooks.guard(p, name, env, options)
        if p.environment(env).protected and not (yes or check) and not sys.stdin.isatty():
            # Nobody can answer a prompt: refuse before even reading the inventory.
            raise BadInput(f"environment {env!r} is protected and nobody is there to confirm: "
                           "pass --yes to run unattended")
        prepared = runbooks.prepare(p, name, env, options)
    if prepared.needs_confirmation:
        prepared = _confirm(prepared)
    cancel = CancelToken()
    progress = Progress(sys.stderr if as_json else sys.stdout)
    try:
        with cancel_on_signals(cancel), errors():
            outcome = runbooks.run(prepared, listener=progress, cancel=cancel)
    finally:
        progress.close()
    if as_json:
        print_json(outcome.to_json())
    else:
        _render(outcome, sys.stdout)
    raise typer.Exit(outcome.exit_code)


def _confirm(prepared: Any) -> Any:
    from dataclasses import replace

    rb = prepared
    question = (f"Run {rb.runbook.name} (risk {rb.runbook.risk}) on protected environment "
                f"{rb.environment!r}, {len(rb.hosts)} host(s), change {rb.options.change_id}?")
    if not typer.confirm(question, default=False, err=True):
        typer.echo("drkit: not confirmed: nothing was run", err=True)
        raise typer.Exit(2)
    return replace(rb, options=replace(rb.options, confirmed=True))


def _render(outcome: Any, out: TextIO) -> None:
    w = out.write
    label = "would change" if outcome.check else "changed"
    w(f"\n{outcome.runbook} on {outcome.environment}: {str(outcome.verdict).upper()} in "
      f"{outcome.duration_s:.1f}s ({outcome.tasks} task results, {outcome.changed_count} "
      f"{label})\n")
    for c in outcome.changes:
        w(f"  {label}: {c.host}: {c.task}\n")
    if outcome.failure:
        w(f"failure: {outcome.failure}\n")
    for key, value in outcome.summary.items():
        w(f"{key}: {value}\n")
    if outcome.evidence_id:
        w(f"evidence: {outcome.evidence_id}\n")
    elif outcome.evidence_error:
        w(f"evidence: NOT RECORDED ({outcome.evidence_error})\n")
    for line in outcome.warnings:
        w(f"warning: {line}\n")
    w(f"artifacts: {outcome.artifacts_dir}\n")
