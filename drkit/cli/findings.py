"""`drkit findings`: the register of failed checks and missed targets, until a retest closes them.

The acting identity for assign and accept is $DRKIT_OPERATOR, else the OS user.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from drkit.cli._common import JsonOption, PlanOption, call, load_plan, new_app, print_json

app = new_app("Findings from failed checks: list, show, assign, accept.")

StoreOption = Annotated[
    str | None,
    typer.Option("--store", "-s", help="Evidence store the register lives beside "
                 "(default: the plan's evidence.store).", show_default=False),
]
IdArg = Annotated[str, typer.Argument(metavar="ID", help="Finding id, like F-12.")]


def _store(store: str | None) -> str | None:
    if store is None or "://" in store:
        return store
    return str(Path(store).expanduser().resolve())


def _line(f) -> str:  # noqa: ANN001 - drkit.governance.findings.Finding
    from drkit.governance import iso

    due = f"due {iso(f.due_at)}" if f.due_at else "no due date"
    overdue = " OVERDUE" if f.overdue() else ""
    return (f"{f.id}  {f.status:<8}  {f.severity:<6}  {f.scenario}/{f.environment}  {f.check}"
            f"  owner {f.owner}  {due}{overdue}  {f.message}")


@app.command("list")
def list_cmd(
    open_only: Annotated[bool, typer.Option("--open", help="Only unresolved (open, accepted).")]
    = False,
    plan: PlanOption = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """List findings in the order they were opened."""
    from drkit.governance import findings

    p = load_plan(plan)
    found = call(findings.list_findings, p, open_only, store_dir=_store(store))
    if as_json:
        print_json({"findings": [f.to_json() for f in found]})
        return
    if not found:
        typer.echo("no open findings" if open_only else "no findings")
    for f in found:
        typer.echo(_line(f))


@app.command("show")
def show_cmd(finding_id: IdArg, plan: PlanOption = None, store: StoreOption = None,
             as_json: JsonOption = False) -> None:
    """One finding with its whole history."""
    from drkit.governance import findings, iso

    p = load_plan(plan)
    f = call(findings.get, p, finding_id, store_dir=_store(store))
    if as_json:
        print_json(f.to_json())
        return
    typer.echo(_line(f))
    typer.echo(f"opened: {iso(f.opened_at)} by {f.opened_by} (evidence {f.evidence_id or '-'})")
    if f.acceptance_reason:
        typer.echo(f"risk accepted: by {f.accepted_by} at {iso(f.accepted_at)}: "
                   f"{f.acceptance_reason}")
    if f.closed_at:
        typer.echo(f"closed: {iso(f.closed_at)} by retest {f.closed_by_evidence or '-'}")
    typer.echo("history:")
    for e in f.history:
        ev = f" evidence {e.evidence_id}" if e.evidence_id else ""
        typer.echo(f"  {iso(e.at)}  {e.action:<9} by {e.by}{ev}  {e.note}".rstrip())


@app.command("assign")
def assign_cmd(
    finding_id: IdArg,
    owner: Annotated[str, typer.Option("--owner", help="New owner (a person or a team).")],
    plan: PlanOption = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Give a finding a new owner (recorded with who and when)."""
    from drkit.governance import findings

    p = load_plan(plan)
    f = call(findings.assign, p, finding_id, owner, store_dir=_store(store))
    if as_json:
        print_json(f.to_json())
        return
    typer.echo(f"{f.id} assigned to {f.owner} by {f.history[-1].by}")


@app.command("accept")
def accept_cmd(
    finding_id: IdArg,
    reason: Annotated[str, typer.Option("--reason", help="Why the risk is acceptable.")],
    plan: PlanOption = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Accept a finding's risk (who, when, why); a passing retest still closes it."""
    from drkit.governance import findings

    p = load_plan(plan)
    f = call(findings.accept, p, finding_id, reason, store_dir=_store(store))
    if as_json:
        print_json(f.to_json())
        return
    typer.echo(f"{f.id} risk accepted by {f.accepted_by}: {f.acceptance_reason}")
