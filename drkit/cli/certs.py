"""`drkit certs check`: find the TLS certificates that expire soon (the rotation trigger)."""

from __future__ import annotations

from typing import Annotated

import typer

from drkit.cli._common import JsonOption, PlanOption, errors, load_plan, new_app, print_json

app = new_app("Check the TLS certificates of the inventory's endpoints.")


@app.callback()
def _group() -> None:
    """Check the TLS certificates of the inventory's endpoints."""
    # A callback keeps `check` a subcommand (Typer collapses a one-command group otherwise).


@app.command()
def check(
    env: Annotated[str | None, typer.Option(
        "--env", "-e", help="Environment from the plan (default: the lab's).")] = None,
    within: Annotated[str | None, typer.Option(
        "--within", help="Window, e.g. 30d (default: the plan's policy.cert_min_validity).")]
    = None,
    plan: PlanOption = None,
    as_json: JsonOption = False,
) -> None:
    """Scan the environment's TLS endpoints (drkit_tls_endpoints) and list the certificates
    that expire within the window.

    Exit codes: 0 none expires within the window, 1 some do (or an endpoint could not be
    read): rotate them with `drkit runbook run cert-rotation`; 2 bad input.
    """
    from drkit import certs
    from drkit.config import parse_duration
    from drkit.errors import BadInput

    p = load_plan(plan)
    with errors():
        window = None
        if within is not None:
            try:
                window = parse_duration(within)
            except ValueError as e:
                raise BadInput(f"--within: {e}") from None
        report = certs.check(p, env or p.lab_environment(), within_s=window)
    if as_json:
        print_json(report.to_json())
    else:
        days = report.within_s / 86400
        for c in report.certs:
            if c.status == certs.CertStatus.UNREACHABLE:
                typer.echo(f"{c.endpoint}  UNREACHABLE  {c.error}")
                continue
            trust = {True: "chains to the CA", False: "NOT trusted by the CA",
                     None: ""}[c.trusted]
            assert c.not_after is not None
            typer.echo(f"{c.endpoint}  {str(c.status).upper():<8}  not after "
                       f"{c.not_after:%Y-%m-%d %H:%M}Z ({c.days_left(report.checked_at):.1f} "
                       f"days)  sha256 {c.fingerprint_sha256[:23]}...  {trust}".rstrip())
        n = len(report.expiring)
        typer.echo(f"{n} of {len(report.certs)} endpoint(s) expire within {days:g} days"
                   + (" or could not be read: rotate with `drkit runbook run cert-rotation`"
                      if n else ""))
    raise typer.Exit(report.exit_code)
