"""`drkit schedule`: the systemd, cron or CI files that run a drill unattended."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from drkit.cli._common import PlanOption, call, load_plan, new_app
from drkit.schedule import Format

app = new_app("Systemd, cron or CI files that run a drill unattended.")


def _drkit_executable() -> str:
    # The scheduler runs without our PATH: name the drkit of this very installation.
    beside = Path(sys.executable).parent / "drkit"
    if beside.exists():
        return str(beside)
    return shutil.which("drkit") or "drkit"


@app.command()
def schedule(
    scenario: Annotated[str, typer.Argument(help="Scenario from the plan, e.g. region-failover.")],
    env: Annotated[str, typer.Option("--env", "-e", help="Environment from the plan.")],
    every: Annotated[str, typer.Option(
        "--every", help="weekly (Tue 03:00 UTC), monthly (15th 03:00 UTC) or a 5-field cron "
        "expression in UTC, e.g. '30 2 * * 3'.")],
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Which scheduler.")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write instead of printing (systemd: a directory for the "
        ".service and .timer).")] = None,
    confirm: Annotated[str | None, typer.Option(
        "--confirm", help="Name of a protected environment: schedule unattended drills "
        "there.")] = None,
    runner: Annotated[str, typer.Option(
        help="CI runner label (GitHub runs-on / GitLab tag); it must reach the "
        "environment.")] = "self-hosted",
    reports_dir: Annotated[str | None, typer.Option(
        help="Where the JSON summary and JUnit XML go (default: drkit-reports/ beside the "
        "plan).")] = None,
    metrics_file: Annotated[str | None, typer.Option(
        help="Prometheus textfile (default: <reports-dir>/drkit.prom), e.g. "
        "/var/lib/prometheus/node-exporter/drkit.prom.")] = None,
    drkit: Annotated[str | None, typer.Option(
        help="The drkit executable the scheduler runs (systemd/cron default: this "
        "installation's).")] = None,
    plan: PlanOption = None,
) -> None:
    """Print (or write) the files that run `drkit drill run` on a calendar, unattended.

    The job runs `drkit drill run SCENARIO --env ENV --plan PLAN --json --junit-xml FILE
    --metrics-file FILE` from the plan's directory: JSON summary and JUnit XML to files,
    evidence to the plan's store, and drkit's exit code as the job's, so a failing drill fails
    the unit or the CI job. Exit 2 on a bad cron expression, scenario or environment.
    """
    from drkit import schedule as sched

    p = load_plan(plan)
    when = call(sched.parse_every, every)
    local = fmt in (Format.SYSTEMD, Format.CRON)
    job = call(sched.job_for, p, scenario, env, fmt=fmt,
               drkit=drkit or (_drkit_executable() if local else "drkit"), confirm=confirm,
               reports_dir=reports_dir, metrics_file=metrics_file)
    files = sched.render(job, when, fmt, runner=runner)
    if output is None:
        for i, f in enumerate(files):
            if len(files) > 1:
                typer.echo(f"{'' if i == 0 else chr(10)}# ---- {f.name}")
            typer.echo(f.content, nl=False)
        return
    for path in call(sched.write, files, output, fmt):
        typer.echo(f"wrote {path}")
    if fmt == Format.SYSTEMD:
        timer = sched.unit_name(job) + ".timer"
        typer.echo(f"next: copy them to /etc/systemd/system/, then `systemctl daemon-reload && "
                   f"systemctl enable --now {timer}`")
