"""`drkit report`: the drill history of a period as one offline HTML file (the audit pack)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from drkit.cli._common import JsonOption, PlanOption, call, load_plan, new_app, print_json

app = new_app("The audit pack: drill history, pass rate, RTO trend (HTML).")


@app.command()
def report(
    since: Annotated[str, typer.Option(
        help="Start of the period: 2025-01-01, an ISO time, or 90d (days ago).")],
    until: Annotated[str | None, typer.Option(
        help="End of the period (a date is inclusive; default: now).")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write the HTML here (default: print it).")] = None,
    store: Annotated[str | None, typer.Option(
        help="Evidence store (default: the plan's evidence.store).")] = None,
    plan: PlanOption = None,
    as_json: JsonOption = False,
) -> None:
    """Pass rate, RTO and RPO per drill against target (SVG), the recovery-time trend, failures
    with their evidence ids, and the services overdue: one self-contained HTML file."""
    from drkit import report as rp
    from drkit import status as st

    p = load_plan(plan)
    now = datetime.now(UTC)
    start = call(rp.parse_when, since, now=now)
    end = call(rp.parse_when, until, now=now, end=True) if until else now
    if store is not None and "://" not in store:
        store = str(Path(store).resolve())
    drills = call(st.drill_summaries, p, store)
    from drkit.governance import findings as fd

    register = [f.to_json(now) for f in call(fd.list_findings, p, False, store_dir=store)]
    rep = call(rp.build, p.model, drills, since=start, until=end, now=now, findings=register)
    if as_json:
        print_json(rep.to_json())
        return
    html = rp.render_html(rep)
    if output is None:
        typer.echo(html, nl=False)
        return
    try:
        from drkit.files import atomic_write

        output.parent.mkdir(parents=True, exist_ok=True)
        # A report for people (auditors): readable like any file the user writes.
        atomic_write(output, html.encode("utf-8"), mode=0o644)
    except OSError as e:
        from drkit.cli._common import fail

        raise fail(f"-o {output}: cannot write ({e.strerror})", 3) from None
    rate = "n/a" if rep.pass_rate is None else f"{rep.pass_rate:.0%}"
    typer.echo(f"wrote {output}: {len(rep.drills)} drills, pass rate {rate}, "
               f"{len(rep.failures)} not passed")
