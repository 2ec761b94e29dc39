"""`drkit status`: per service, the last drill and whether it is overdue (a CI compliance gate)."""

from __future__ import annotations

from typing import Annotated

import typer

from drkit.cli._common import JsonOption, PlanOption, call, load_plan, new_app, print_json

app = new_app("Per service: last drill, verdict, RTO/RPO, overdue or not.")


def _secs(v: float | None) -> str:
    return "-" if v is None else f"{v:g}s"


@app.command()
def status(
    env: Annotated[str | None, typer.Option(
        "--env", "-e", help="Count only drills in this environment (default: any).")] = None,
    store: Annotated[str | None, typer.Option(
        help="Evidence store (default: the plan's evidence.store).")] = None,
    plan: PlanOption = None,
    as_json: JsonOption = False,
) -> None:
    """Per service: the last drill, its verdict, RTO and RPO against target, the next due date.

    A service needs a PASSING drill as often as the plan's policy says for its tier
    (policy.drill_every). Exit 1 if any service is overdue (never drilled counts) or its last
    drill did not pass; 0 otherwise: use it as a compliance gate in CI.
    """
    from drkit import status as st

    p = load_plan(plan)
    if store is not None and "://" not in store:
        from pathlib import Path

        store = str(Path(store).resolve())  # relative to where the user is, not the plan
    report = call(st.status, p, environment=env, store=store)
    if as_json:
        print_json(report.to_json())
    else:
        rows = [("SERVICE", "TIER", "STATE", "LAST DRILL", "VERDICT", "RTO/TARGET",
                 "RPO/TARGET", "NEXT DUE")]
        for s in report.services:
            last = s.last
            res = last.result(s.service) if last else None
            rows.append((
                s.service, str(s.tier), str(s.state),
                f"{last.id} {last.at:%Y-%m-%d}" if last else "never",
                last.verdict if last else "-",
                f"{_secs(res.rto_s if res else None)}/{_secs(s.rto_target_s)}",
                f"{_secs(res.rpo_s if res else None)}/{_secs(s.rpo_target_s)}",
                f"{s.next_due:%Y-%m-%d}" if s.next_due else ("-" if s.interval_s is None
                                                              else "now"),
            ))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        bad = [s for s in report.services if not s.compliant]
        for s in bad:
            typer.echo(f"{s.service}: {s.state}: {s.reason}", err=True)
        scope = f" in {env}" if env else ""
        typer.echo(f"{len(report.services) - len(bad)} of {len(report.services)} services "
                   f"compliant{scope}" + ("" if not bad else "; exit 1"))
    raise typer.Exit(report.exit_code)
