"""The `drkit` command: a thin Typer shell over the library.

Each command group lives in its own module (a Typer `app`) and is imported only when invoked, so
`drkit --help` stays fast. Commands parse arguments, call one library function, render the
result, and map a DrkitError to its exit code (0 ok, 1 check failed, 2 bad input, 3 could not run).
"""

from __future__ import annotations

import importlib.util

import typer

from drkit import __version__
from drkit.cli._lazy import LazyGroup

# name -> (module with a Typer `app`, one-line help shown by `drkit --help`).
GROUPS = {
    "plan": ("drkit.cli.plan", "Validate the plan file (drkit.yml) and print its JSON Schema."),
    "lab": ("drkit.cli.lab", "Bring the local two-region payments lab up, down, or show it."),
    "lab-aws": ("drkit.cli.lab_aws", "The AWS-shaped lab: a Terraform-built estate it follows."),
    "drill": ("drkit.cli.drill", "Run DR drills: the region-failover rehearsal, readiness checks."),
    "evidence": ("drkit.cli.evidence", "Signed, hash-chained DR evidence: list, verify, export."),
    "runbook": ("drkit.cli.runbook", "On-call runbooks with check mode, change ids, guard rails."),
    "certs": ("drkit.cli.certs", "Check the TLS certificates of the inventory's endpoints."),
    "schedule": ("drkit.cli.schedule", "Systemd, cron or CI files that run a drill unattended."),
    "status": ("drkit.cli.status", "Per service: last drill, verdict, RTO/RPO, overdue or not."),
    "report": ("drkit.cli.report", "The audit pack: drill history, pass rate, RTO trend (HTML)."),
    "findings": ("drkit.cli.findings", "Findings from failed checks: list, assign, accept."),
}


class _Groups(LazyGroup):
    lazy = {k: v for k, v in GROUPS.items() if importlib.util.find_spec(v[0]) is not None}


app = typer.Typer(
    cls=_Groups,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"drkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Show drkit's version and exit."),
) -> None:
    """Disaster-recovery rehearsal, on-call runbooks and auditable evidence for payment platforms.

    Start with `drkit lab up`, then `drkit drill run region-failover --env lab`.

    Exit codes: 0 ok, 1 a target or check failed, 2 bad input, 3 could not run.
    """


def main() -> None:
    app()
