"""`drkit drill request | approve | requests`: four-eyes approvals for drills.

Mounted under `drkit drill` by drkit.cli.drill. The acting identity is $DRKIT_OPERATOR, else
the OS user; the requester can never approve their own request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from drkit.cli._common import (
    JsonOption,
    PlanOption,
    call,
    fail,
    load_plan,
    new_app,
    print_json,
)

app = new_app("Four-eyes approvals: request a drill, approve another operator's request.")

StoreOption = Annotated[
    str | None,
    typer.Option("--store", "-s", help="Evidence store the requests live beside "
                 "(default: the plan's evidence.store).", show_default=False),
]


def _store(store: str | None) -> str | None:
    # A store given on the command line is relative to where the user stands, not to the plan.
    if store is None or "://" in store:
        return store
    return str(Path(store).expanduser().resolve())


def _line(r) -> str:  # noqa: ANN001 - drkit.governance.approvals.Request
    from drkit.governance import iso

    approved = f"approved by {r.approved_by} at {iso(r.approved_at)}" if r.approved_by \
        else "not approved"
    expires = f", expires {iso(r.expires_at)}" if r.expires_at else ""
    used = f", used by {r.used_by} at {iso(r.used_at)}" if r.used_at else ""
    return (f"{r.id}  {r.status()}  {r.scenario} in {r.environment}  requested by "
            f"{r.requested_by} at {iso(r.requested_at)}; {approved}{expires}{used}")


@app.command("request")
def request_cmd(
    scenario: Annotated[str, typer.Argument(help="Scenario to run, as named in the plan.")],
    env: Annotated[str, typer.Option("--env", "-e", help="Environment to run it in.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (and the change id, if any).")],
    plan: PlanOption = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Ask for a drill run; another operator approves it with `drkit drill approve ID`."""
    from drkit.governance import approvals

    p = load_plan(plan)
    r = call(approvals.request, p, scenario, env, reason, store_dir=_store(store))
    if as_json:
        print_json(r.to_json())
        return
    typer.echo(f"request {r.id}: {r.scenario} in {r.environment}, by {r.requested_by}")
    typer.echo(f"another operator approves it with: drkit drill approve {r.id}")


@app.command("approve")
def approve_cmd(
    request_id: Annotated[str, typer.Argument(metavar="REQUEST", help="Request id (or prefix).")],
    expires: Annotated[str | None, typer.Option(
        "--expires", help="The approval lapses after this long (e.g. 24h, 30m); default never.",
        show_default=False)] = None,
    plan: PlanOption = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Approve another operator's request (never your own)."""
    from drkit.config import parse_duration
    from drkit.errors import BadInput
    from drkit.governance import approvals, iso

    seconds: float | None = None
    if expires is not None:
        try:
            seconds = parse_duration(expires)
        except ValueError as e:
            raise fail(f"--expires: {e}", BadInput.exit_code) from None
    p = load_plan(plan)
    r = call(approvals.approve, p, request_id, expires_in=seconds, store_dir=_store(store))
    if as_json:
        print_json(r.to_json())
        return
    until = f" until {iso(r.expires_at)}" if r.expires_at else " (no expiry)"
    typer.echo(f"request {r.id} approved by {r.approved_by}{until}")
    typer.echo(f"run it once with: drkit drill run {r.scenario} --env {r.environment} "
               f"--request {r.id}")


@app.command("requests")
def requests_cmd(plan: PlanOption = None, store: StoreOption = None,
                 as_json: JsonOption = False) -> None:
    """List approval requests, oldest first, with who asked, who approved, and their use."""
    from drkit.governance import approvals

    p = load_plan(plan)
    reqs = call(approvals.list_requests, p, store_dir=_store(store))
    if as_json:
        print_json({"requests": [r.to_json() for r in reqs]})
        return
    if not reqs:
        typer.echo("no requests")
    for r in reqs:
        typer.echo(_line(r))
