"""`drkit drill`: run the region-failover rehearsal, or its preflight alone."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, TextIO

import typer

from drkit.cli._common import JsonOption, PlanOption, errors, load_plan, new_app, print_json

app = new_app("Run DR drills: the region-failover rehearsal and the daily readiness check.")

EnvOption = Annotated[str, typer.Option("--env", "-e", help="Environment from the plan.")]


class Progress:
    """Renders drill progress: a live line on a terminal, plain lines in a pipe."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.rto = 0.0
        self.clock: datetime | None = None
        self.phase = ""
        self.phase_at = time.monotonic()
        self._live: Any = None
        self.phases: list[str] = []

    # DrillListener hooks -------------------------------------------------------------------
    def drill_started(self, run_id: str, scenario: str, environment: str, targets: Any,
                      phases: Sequence[str]) -> None:
        self.rto = targets.rto_s
        self.phases = list(phases)
        self._line(f"drill {run_id}: {scenario} on {environment} (RTO target {targets.rto_s:g}s,"
                   f" RPO target {targets.rpo_s:g}s); phases: {' > '.join(phases)}")
        if self.tty:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(console=Console(file=self.out), refresh_per_second=8,
                              transient=True, get_renderable=self._status)
            self._live.start()

    def phase_started(self, name: str, at: datetime) -> None:
        self.phase = name
        self.phase_at = time.monotonic()
        if not self.tty:
            self._line(f"  {name}: started{self._clock_text()}")

    def phase_finished(self, result: Any) -> None:
        if result.started_at is None:
            return
        mark = {"ok": "ok", "checked": "ok (check mode)", "failed": "FAILED",
                "canceled": "CANCELLED"}.get(str(result.status), str(result.status))
        extra = f" - {result.message}" if result.message else ""
        self._line(f"  {result.name}: {mark} in {result.duration_s:.2f}s "
                   f"({len(result.tasks)} tasks){extra}")

    def task_finished(self, phase: str, result: Any) -> None:
        pass

    def clock_started(self, at: datetime) -> None:
        self.clock = at

    def note(self, message: str) -> None:
        self._line(f"  note: {message}")

    def drill_finished(self, outcome: Any) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    # rendering -------------------------------------------------------------------------------
    def _clock_text(self) -> str:
        if self.clock is None:
            return ""
        spent = (datetime.now(UTC) - self.clock).total_seconds()
        return f" [clock {spent:.1f}s / {self.rto:g}s]"

    def _status(self) -> Any:
        from rich.text import Text

        spent = time.monotonic() - self.phase_at
        text = Text(f"  > {self.phase or 'starting'} {spent:.1f}s")
        if self.clock is not None:
            used = (datetime.now(UTC) - self.clock).total_seconds()
            style = "red" if used > self.rto else "green"
            text.append(f"  recovery clock {used:.1f}s / {self.rto:g}s budget", style=style)
        return text

    def _line(self, text: str) -> None:
        if self._live is not None:
            self._live.console.print(text, highlight=False, markup=False)
        else:
            self.out.write(text + "\n")
            self.out.flush()


def _render(outcome: Any, out: TextIO) -> None:
    data = outcome.to_json()
    w = out.write
    w(f"\nverdict: {data['verdict'].upper()}  ({'; '.join(data['reasons'])})\n")
    rto, rpo = data["rto"], data["rpo"]
    actual = f"{rto['actual_s']:.2f}s" if rto["actual_s"] is not None else "not recovered"
    w(f"RTO: {actual} (target {rto['target_s']:g}s)\n")
    if rpo["actual_s"] is not None:
        w(f"RPO: {rpo['actual_s']:.2f}s, {rpo['lost_payments']} acknowledged payments lost "
          f"(target {rpo['target_s']:g}s)\n")
    rec = data.get("reconciliation")
    if rec:
        balanced = (rec.get("ledger") or {}).get("balanced")
        w(f"reconciliation: {rec.get('acked_count')} acknowledged, {rec.get('present_count')} "
          f"present, {rec.get('lost_count')} lost, ledger "
          f"{'balanced' if balanced else 'NOT balanced'}\n")
    if data["smoke"]:
        flows = ", ".join(f"{s['flow']} {s['status']}" for s in data["smoke"])
        w(f"smoke: {flows}\n")
    w("phases: " + ", ".join(f"{p['name']} {p['status']} {p['duration_s']:.2f}s"
                             for p in data["phases"]) + "\n")
    if data.get("evidence"):
        w(f"evidence: {data['evidence']['id']}\n")
    if outcome.artifacts_dir:
        w(f"artifacts: {outcome.artifacts_dir}\n")


def _drill(plan_path: Any, scenario: str, env: str, as_json: bool, **opts: Any) -> None:
    from drkit import drill

    plan = load_plan(plan_path)
    cancel = drill.CancelToken()

    def stop(signum: int, _frame: Any) -> None:
        cancel.cancel(signal.Signals(signum).name)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    progress = Progress(sys.stderr if as_json else sys.stdout)
    try:
        with errors():
            outcome = drill.run_drill(plan, scenario, env, options=drill.DrillOptions(**opts),
                                      listener=progress, cancel=cancel)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if as_json:
        print_json(outcome.to_json())
    else:
        _render(outcome, sys.stdout)
    raise typer.Exit(outcome.exit_code)


@app.command()
def run(
    scenario: Annotated[str, typer.Argument(help="Scenario from the plan, e.g. region-failover.")],
    env: EnvOption,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Ansible check mode: show what each "
                                          "phase would change; change nothing.")] = False,
    failback: Annotated[bool, typer.Option("--failback/--no-failback",
                                           help="Return to the original primary afterwards.")]
    = True,
    confirm: Annotated[str | None, typer.Option(
        "--confirm", help="Name of a protected environment, to confirm you mean it.")] = None,
    smoke_timeout: Annotated[str | None, typer.Option(
        "--smoke-timeout", help="How long smoke retries before giving up (default: twice the "
        "RTO target, at least 30s).")] = None,
    plan: PlanOption = None,
    as_json: JsonOption = False,
) -> None:
    """Rehearse a scenario end to end and measure RTO and RPO from reality.

    Phases run in the plan's order; the recovery clock starts with the fault and stops when
    every smoke flow passes through the public entry point. A canary writes payments all along
    to measure data loss. SIGINT/SIGTERM stops the running phase and rolls back.

    Exit codes: 0 pass, 1 fail (a target missed, a flow or phase failed), 2 bad input,
    3 aborted or could not run.
    """
    timeout = None
    if smoke_timeout is not None:
        from drkit.config import parse_duration

        with errors():
            try:
                timeout = parse_duration(smoke_timeout)
            except ValueError as e:
                from drkit.errors import BadInput

                raise BadInput(f"--smoke-timeout: {e}") from None
    _drill(plan, scenario, env, as_json, dry_run=dry_run, failback=failback, confirm=confirm,
           smoke_timeout_s=timeout)


@app.command()
def check(
    env: EnvOption,
    scenario: Annotated[str | None, typer.Option(help="Scenario whose preflight to run "
                                                 "(default: the plan's first).")] = None,
    plan: PlanOption = None,
    as_json: JsonOption = False,
) -> None:
    """The daily readiness check: the scenario's preflight alone, nothing broken.

    Replication streaming and within the RPO target, the IaC template valid, the secondary
    region reachable, targets declared, no other drill running. Exit 0 ready, 1 not ready.
    """
    from drkit.config import load_plan as _load

    with errors():
        p = _load(plan)
        name = scenario or next(iter(p.model.scenarios))
    _drill(plan, name, env, as_json, preflight_only=True, failback=False)
