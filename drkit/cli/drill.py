"""`drkit drill`: run the region-failover rehearsal, or its preflight alone."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

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

if TYPE_CHECKING:
    from drkit.drill import DrillListener
else:
    # Importing drkit.drill here would slow `drkit drill --help` (the commands import it when
    # they run). Progress defines every hook itself, so the base matters only to mypy.
    DrillListener = object


def _store(store: str | None) -> str | None:
    # A store given on the command line is relative to where the user stands, not to the plan.
    if store is None or store.startswith("s3://"):
        return store
    return str(Path(store).resolve())


app = new_app("Run DR drills: the region-failover rehearsal and the daily readiness check.")


def _mount_approvals() -> None:
    """`drkit drill request|approve|requests` (four eyes) live in drkit.cli.approvals."""
    from drkit.cli import approvals

    app.registered_commands += approvals.app.registered_commands


_mount_approvals()

EnvOption = Annotated[str, typer.Option("--env", "-e", help="Environment from the plan.")]


class Progress(LiveLines, DrillListener):
    """Renders drill progress: a live line on a terminal, plain lines in a pipe."""

    def __init__(self, out: TextIO) -> None:
        LiveLines.__init__(self, out)
        self.rto = 0.0
        self.clock: datetime | None = None
        self.rto_s: float | None = None  # once the clock stopped
        self.phase = ""
        self.phase_at = time.monotonic()
        self.phases: list[str] = []

    # DrillListener hooks -------------------------------------------------------------------
    def drill_started(self, run_id: str, scenario: str, environment: str, targets: Any,
                      phases: Sequence[str]) -> None:
        self.rto = targets.rto_s
        self.phases = list(phases)
        self._line(f"drill {run_id}: {scenario} on {environment} (RTO target {targets.rto_s:g}s,"
                   f" RPO target {targets.rpo_s:g}s); phases: {' > '.join(phases)}")
        self.start_live()

    def phase_started(self, name: str, at: datetime) -> None:
        self.phase = name
        self.phase_at = time.monotonic()
        if not self.tty:
            self._line(f"  {name}: started{self._clock_text()}")

    def phase_finished(self, result: Any) -> None:
        if result.started_at is None and str(result.status) != "error":
            return
        mark = {"ok": "ok", "checked": "ok (check mode)", "failed": "FAILED",
                "canceled": "CANCELLED", "error": "ERROR"}.get(str(result.status),
                                                              str(result.status))
        extra = f" - {result.message}" if result.message else ""
        self._line(f"  {result.name}: {mark} in {result.duration_s:.2f}s "
                   f"({len(result.tasks)} tasks){extra}")

    def task_finished(self, phase: str, result: Any) -> None:
        pass

    def clock_started(self, at: datetime) -> None:
        self.clock = at

    def clock_stopped(self, at: datetime, rto_s: float) -> None:
        self.rto_s = rto_s
        stamp = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self._line(f"  recovery clock stopped: all flows observed green at {stamp}, "
                   f"{rto_s:.2f}s after the fault (target {self.rto:g}s)")

    def note(self, message: str) -> None:
        self._line(f"  note: {message}")

    def drill_finished(self, outcome: Any) -> None:
        self.stop_live()

    # rendering -------------------------------------------------------------------------------
    def _clock_text(self) -> str:
        if self.clock is None or self.rto_s is not None:
            return ""
        spent = (datetime.now(UTC) - self.clock).total_seconds()
        return f" [clock {spent:.1f}s / {self.rto:g}s]"

    def _status(self) -> Any:
        from rich.text import Text

        spent = time.monotonic() - self.phase_at
        text = Text(f"  > {self.phase or 'starting'} {spent:.1f}s")
        if self.clock is not None and self.rto_s is None:
            used = (datetime.now(UTC) - self.clock).total_seconds()
            style = "red" if used > self.rto else "green"
            text.append(f"  recovery clock {used:.1f}s / {self.rto:g}s budget", style=style)
        return text



def _render(outcome: Any, out: TextIO) -> None:
    data = outcome.to_json()
    w = out.write
    w(f"\nverdict: {data['verdict'].upper()}  ({'; '.join(data['reasons'])})\n")
    rto, rpo = data["rto"], data["rpo"]
    if data["dry_run"] or len(data["phases"]) <= 1 and not data["smoke"]:
        pass  # a dry run or a readiness check measures no recovery
    else:
        actual = f"{rto['actual_s']:.2f}s" if rto["actual_s"] is not None else "not measured"
        w(f"RTO: {actual} (target {rto['target_s']:g}s)\n")
        if rpo["actual_s"] is not None:
            w(f"RPO: {rpo['actual_s']:.2f}s, {rpo['lost_payments']} acknowledged payments lost "
              f"(target {rpo['target_s']:g}s)\n")
        else:
            w(f"RPO: not measured (target {rpo['target_s']:g}s)\n")
    for line in data.get("observed") or []:
        w(f"observed: {line}\n")
    for line in data.get("missing") or []:
        w(f"NOT observed: {line}\n")
    for line in data.get("warnings") or []:
        w(f"warning: {line}\n")
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
    for line in data.get("evidence_warnings") or []:
        w(f"warning: evidence: {line}\n")
    if outcome.artifacts_dir:
        w(f"artifacts: {outcome.artifacts_dir}\n")


def _drill(plan_path: Any, scenario: str, env: str, as_json: bool, *,
           metrics_file: Path | None = None, junit_xml: Path | None = None, **opts: Any) -> None:
    from drkit import drill
    from drkit.envlock import EnvironmentBusy

    skip_if_busy = opts.pop("skip_if_busy", False)
    plan = load_plan(plan_path)
    cancel = drill.CancelToken()
    progress = Progress(sys.stderr if as_json else sys.stdout)
    with cancel_on_signals(cancel), errors():
        try:
            outcome = drill.run_drill(plan, scenario, env, options=drill.DrillOptions(**opts),
                                      listener=progress, cancel=cancel)
        except EnvironmentBusy as e:
            if not skip_if_busy:
                raise
            _skipped(scenario, env, as_json, f"environment busy: {e.holder.describe()}")
    _outputs(plan, outcome, metrics_file, junit_xml, opts.get("store"))
    try:
        if as_json:
            print_json(outcome.to_json())
        else:
            _render(outcome, sys.stdout)
    except OSError:
        pass  # the terminal went away (SIGHUP): the verdict still goes out as the exit code
    raise typer.Exit(outcome.exit_code)


def _skip_if_blackout(plan_path: Any, scenario: str, env: str, as_json: bool) -> None:
    from drkit.governance import blackout

    p = load_plan(plan_path)
    with errors():
        hit = blackout.active(p, datetime.now(UTC))
    if hit is None:
        return
    until = hit.end.isoformat().replace("+00:00", "Z")
    _skipped(scenario, env, as_json, f"inside blackout window {hit.window.name!r} until {until}")


def _skipped(scenario: str, env: str, as_json: bool, reason: str) -> None:
    """A scheduled run that does not start (blackout window, environment busy): exit 0."""
    if as_json:
        print_json({"scenario": scenario, "environment": env, "verdict": "skipped",
                    "reasons": [reason]})
    else:
        typer.echo(f"drill skipped: {reason}")
    raise typer.Exit(0)


def _terminal_gate() -> Any:
    """On a terminal, a gate asks the operator; unattended, the library applies the rules."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        return None

    def ask(req: Any) -> Any:
        from drkit.drill import GateDecision
        from drkit.evidence.recorder import operator

        done = ", ".join(f"{p.name} {p.status} {p.duration_s:.1f}s" for p in req.done) or "none"
        typer.echo(f"\n  gate before {req.phase}\n    done: {done}\n"
                   f"    next: {' > '.join(req.next_phases)}")
        answer = typer.prompt("    continue? type 'yes' to go on, anything else aborts "
                              "(rollback)", default="no", show_default=False)
        ok = answer.strip().lower() in ("yes", "y")
        return GateDecision(req.phase, ok, operator(), datetime.now(UTC),
                            "terminal" if ok else "refused at the terminal")

    return ask


def _outputs(plan: Any, outcome: Any, metrics_file: Path | None, junit_xml: Path | None,
             store: str | None) -> None:
    """Files for schedulers. Failing to write one is reported; it never changes the verdict."""
    if metrics_file is not None and outcome.dry_run:
        # A dry run proves no recovery: drkit_drill_success=1 from it would be a false green.
        typer.echo("drkit: warning: a dry run writes no drill metrics (it recovers nothing)",
                   err=True)
    elif metrics_file is not None:
        from drkit import metrics
        from drkit.errors import DrkitError

        try:
            metrics.write_textfile(metrics_file, outcome.to_json(), plan=plan)
        except DrkitError as e:
            typer.echo(f"drkit: warning: metrics not written: {e}", err=True)
    if junit_xml is not None:
        if outcome.evidence_id is None:
            typer.echo("drkit: warning: no evidence record for this run (dry run or check), so "
                       "no JUnit XML", err=True)
            return
        from drkit.evidence import load_record, open_store
        from drkit.evidence.report import Integrity, render

        record = load_record(open_store(store or plan.model.evidence.store, plan=plan),
                             outcome.evidence_id)
        text = render(record, "junit", Integrity(checked=False, ok=True,
                                                 summary="sealed by this run"))
        junit_xml.parent.mkdir(parents=True, exist_ok=True)
        junit_xml.write_text(text, encoding="utf-8")


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
    request: Annotated[str | None, typer.Option(
        "--request", help="An approved request (`drkit drill request`/`approve`), when the "
        "plan needs four eyes for this scenario or environment.")] = None,
    override_blackout: Annotated[str | None, typer.Option(
        "--override-blackout", metavar="REASON",
        help="Run inside a blackout window; the reason goes into the evidence.")] = None,
    change_id: Annotated[str | None, typer.Option(
        "--change-id", help="Change ticket, recorded in the evidence.")] = None,
    store: Annotated[str | None, typer.Option(
        "--store", help="Evidence store (a directory or s3://bucket/prefix); default: the "
        "plan's.")] = None,
    metrics_file: Annotated[Path | None, typer.Option(
        "--metrics-file", help="Write Prometheus textfile-collector metrics here.")] = None,
    junit_xml: Annotated[Path | None, typer.Option(
        "--junit-xml", help="Write the phases and smoke flows as JUnit XML (for CI).")] = None,
    approve_gates: Annotated[bool, typer.Option(
        "--approve-gates", help="Pass the scenario's manual gates unattended (needs an "
        "approved --request).")] = False,
    skip_in_blackout: Annotated[bool, typer.Option(
        "--skip-in-blackout", help="Inside a blackout window, skip the drill and exit 0 (for "
        "schedulers) instead of refusing with exit 2.")] = False,
    skip_if_busy: Annotated[bool, typer.Option(
        "--skip-if-busy", help="When another command is changing the environment, skip the "
        "drill and exit 0, naming it (for schedulers: runs never pile up) instead of refusing "
        "with exit 2.")] = False,
    here: Annotated[bool, typer.Option(
        "--here", help="Drive the drill from this process even when the environment has "
        "execution nodes and shared state (what the node itself runs); its playbooks run "
        "here.")] = False,
    run_id: Annotated[str | None, typer.Option(
        "--run-id", hidden=True, help="The run id the controller chose (a driver on a node).")
    ] = None,
    plan: PlanOption = None,
    as_json: JsonOption = False,
) -> None:
    """Rehearse a scenario end to end and measure RTO and RPO from reality.

    When the environment has execution nodes and shared state (issue 18), the drill's driver
    is started on the surviving region's node and this command follows it (as `drill attach`
    does): killing this command leaves the drill running; another controller can attach.

    Phases run in the plan's order; the recovery clock starts with the fault and stops when
    every smoke flow passes through the public entry point. A canary writes payments all along
    to measure data loss. SIGINT/SIGTERM/SIGHUP stops the running phase and rolls back.

    Exit codes: 0 pass, 1 fail (a target missed, a flow or phase failed) or inconclusive
    (something the verdict needs was not observed), 2 bad input, 3 aborted or could not run.
    """
    if skip_in_blackout and override_blackout is None:
        _skip_if_blackout(plan, scenario, env, as_json)
    timeout = None
    if smoke_timeout is not None:
        from drkit.config import parse_duration

        with errors():
            try:
                timeout = parse_duration(smoke_timeout)
            except ValueError as e:
                from drkit.errors import BadInput

                raise BadInput(f"--smoke-timeout: {e}") from None
    if not here and not dry_run:
        _on_node(plan, scenario, env, as_json, failback=failback, confirm=confirm,
                 smoke_timeout=smoke_timeout, request=request, change_id=change_id,
                 override_blackout=override_blackout, store=store, approve_gates=approve_gates)
    _drill(plan, scenario, env, as_json, metrics_file=metrics_file, junit_xml=junit_xml,
           dry_run=dry_run, failback=failback, confirm=confirm, smoke_timeout_s=timeout,
           request=request, override_blackout=override_blackout, change_id=change_id,
           store=_store(store), approve_gates=approve_gates, gate=_terminal_gate(),
           skip_if_busy=skip_if_busy, run_id=run_id, on_node=here)


def _on_node(plan_path: Any, scenario: str, env: str, as_json: bool, **flags: Any) -> None:
    """With execution nodes and shared state: start the driver on the node, then attach.
    Returns (and the drill runs here) when the environment has neither."""
    import os

    p = load_plan(plan_path)
    with errors():
        e = p.environment(env)
        if e.state is None or not e.execution_nodes:
            return
        from drkit.drill import new_run_id
        from drkit.drill.shared import start_on_node

        args: list[str] = []
        for name, value in flags.items():
            opt = "--" + name.replace("_", "-")
            if name == "failback":
                args.append("--failback" if value else "--no-failback")
            elif isinstance(value, bool):
                args += [opt] if value else []
            elif value is not None:
                args += [opt, str(_store(value) if name == "store" else value)]
        rid = new_run_id()
        node = start_on_node(p, scenario, env, rid, args, environ=dict(os.environ))
        typer.echo(f"drill {rid} runs on execution node {node.name}; following it (Ctrl-C "
                   f"leaves it running; `drkit drill attach {rid} -e {env}` follows it again)",
                   err=as_json)
    _attach(p, rid, env, as_json)


def _attach(p: Any, run_id: str, env: str | None, as_json: bool) -> None:
    from drkit.drill.shared import find_state, follow

    out = sys.stderr if as_json else sys.stdout

    def show(entry: Any) -> None:
        d = entry.data
        text = {"started": lambda: f"started {d.get('scenario')} on {d.get('environment')}: "
                f"{' > '.join(d.get('phases', []))}",
                "phase_started": lambda: f"phase {d.get('name')} started",
                "phase": lambda: f"phase {d.get('name')} {d.get('status')}"
                + (f": {d['message']}" if d.get("message") else ""),
                "clock_started": lambda: "recovery clock started",
                "clock_stopped": lambda: f"recovery clock stopped: RTO {d.get('rto_s'):.2f}s",
                "note": lambda: f"note: {d.get('message')}",
                "finished": lambda: f"finished: {d.get('verdict')}"}.get(
                    entry.kind, lambda: entry.kind)()
        try:
            out.write(f"[{entry.seq}] {text}\n")
            out.flush()
        except OSError:
            pass

    with errors():
        _, state = find_state(p, run_id, env)
        try:
            result = follow(state, run_id, show)
        except KeyboardInterrupt:
            typer.echo(f"stopped following {run_id}; the drill goes on", err=True)
            raise typer.Exit(3) from None
    assert result is not None
    if as_json:
        print_json({"run_id": run_id, **result})
    else:
        typer.echo(f"verdict: {result.get('verdict')} (exit {result.get('exit_code')})"
                   + (f"; evidence {result['evidence_id']}" if result.get("evidence_id")
                      else ""))
        for reason in result.get("reasons") or []:
            typer.echo(f"  - {reason}")
    raise typer.Exit(int(result.get("exit_code", 3)))


def _forward(p: Any, env: str | None, args: list[str], run_id: str | None = None) -> None:
    """Run the command on the environment's execution node when it has one and shared state
    (exit with its code); return when it runs here."""
    import os

    from drkit.drill.shared import find_state, forward_to_node

    with errors():
        if env is None:
            if not any(e.state is not None for e in p.model.environments.values()):
                return
            from drkit.errors import BadInput

            try:
                env, _ = find_state(p, run_id or "", None)
            except BadInput:  # not a shared run: resumed here, as before
                return
        rc = forward_to_node(p, env, args, environ=dict(os.environ))
    if rc is not None:
        raise typer.Exit(rc)


@app.command()
def attach(
    run_id: Annotated[str, typer.Argument(help="The run to follow (drkit drill status).")],
    env: Annotated[str | None, typer.Option("--env", "-e", help="Environment from the plan "
                                            "(default: search every one with shared state).")]
    = None,
    plan: PlanOption = None,
    as_json: JsonOption = False,
) -> None:
    """Follow a drill from any controller, from the shared state, until its verdict.

    Exit codes: the drill's own (0 pass, 1 fail or inconclusive, 3 aborted); 2 when the run
    is unknown."""
    _attach(load_plan(plan), run_id, env, as_json)


@app.command()
def status(
    env: Annotated[str | None, typer.Option("--env", "-e", help="Environment from the plan "
                                            "(default: every one with shared state).")] = None,
    plan: PlanOption = None,
    as_json: JsonOption = False,
) -> None:
    """The drills running now, per environment, from the shared state (who, where, since)."""
    from datetime import UTC, datetime

    from drkit.state import open_state

    p = load_plan(plan)
    rows: list[dict[str, Any]] = []
    with errors():
        names = [env] if env else [n for n, e in p.model.environments.items()
                                   if e.state is not None]
        for name in names:
            state = open_state(p, name)
            if state is None:
                from drkit.errors import BadInput

                raise BadInput(f"environment {name!r} has no shared state (`state:` in the "
                               "plan): its drills are local, see `drkit status`")
            lease = state.lease(name)
            running = lease is not None and lease.live(state.clock())
            rows.append({"environment": name, "running": running,
                         "run_id": lease.run_id if running and lease else None,
                         "holder": lease.describe() if running and lease else None,
                         "token": lease.token if lease else 0,
                         "expired": bool(lease and not lease.released and not running)})
    if as_json:
        print_json({"checked_at": datetime.now(UTC).isoformat(), "environments": rows})
        return
    for r in rows:
        if r["running"]:
            typer.echo(f"{r['environment']}: running {r['run_id']}: {r['holder']}")
        elif r["expired"]:
            typer.echo(f"{r['environment']}: no drill running (the last holder's lease expired "
                       "without a release: `drkit drill recover` may be needed)")
        else:
            typer.echo(f"{r['environment']}: no drill running")


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


@app.command()
def resume(
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="The drill's run id.")],
    here: Annotated[bool, typer.Option(
        "--here", help="Resume from this machine's run folder even when the run is in an "
        "environment's shared state (what the execution node itself runs).")] = False,
    plan: PlanOption = None,
    as_json: JsonOption = False,
) -> None:
    """Continue an interrupted drill from its first unfinished phase.

    The phases it finished are re-checked first; the recovery clock continues from the
    original fault; a new evidence record links to the first one. A drill that ran on an
    execution node is resumed there, from any controller (issue 18).
    """
    from drkit import drill

    p = load_plan(plan)
    if not here:
        _forward(p, None, ["drill", "resume", run_id, *(["--json"] if as_json else [])],
                 run_id=run_id)
    cancel = drill.CancelToken()
    progress = Progress(sys.stderr if as_json else sys.stdout)
    with cancel_on_signals(cancel), errors():
        outcome = drill.resume(p, run_id, listener=progress, cancel=cancel,
                               options=drill.DrillOptions(gate=_terminal_gate()))
    if as_json:
        print_json(outcome.to_json())
    else:
        _render(outcome, sys.stdout)
    raise typer.Exit(outcome.exit_code)


@app.command()
def recover(
    env: EnvOption,
    scenario: Annotated[str | None, typer.Option(help="Scenario whose rollback to use "
                                                 "(default: the killed drill's, else the "
                                                 "plan's first).")] = None,
    here: Annotated[bool, typer.Option(
        "--here", help="Recover from this machine even when the environment has execution "
        "nodes and shared state (what the node itself runs).")] = False,
    plan: PlanOption = None,
    as_json: JsonOption = False,
) -> None:
    """Bring an environment back to serving payments after a drill was killed.

    Seals the killed run's evidence as interrupted, then runs the scenario's rollback: traffic
    on the original primary, replication re-established, or its absence clearly reported.
    Exit 0 serving with replication streaming, 1 serving without replication, 3 not serving.
    With execution nodes and shared state it runs on the surviving region's node, where the
    drill ran, from any controller (issue 18).
    """
    from drkit import drill

    p = load_plan(plan)
    if not here:
        _forward(p, env, ["drill", "recover", "-e", env,
                          *(["--scenario", scenario] if scenario else []),
                          *(["--json"] if as_json else [])])
    with errors():
        result = drill.recover(p, env, scenario, listener=Progress(
            sys.stderr if as_json else sys.stdout))
    if as_json:
        print_json(result.to_json())
    else:
        typer.echo(f"{env}: {result.message}")
        for rid in result.sealed_interrupted:
            typer.echo(f"evidence: sealed interrupted run {rid}")
    raise typer.Exit(result.exit_code)
