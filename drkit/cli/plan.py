"""`drkit plan`: validate the plan file and publish its JSON Schema."""

from __future__ import annotations

import typer

from drkit.cli._common import JsonOption, PlanOption, call, load_plan, new_app, print_json

app = new_app("Validate the plan file (drkit.yml) and print its JSON Schema.")


@app.command()
def validate(plan: PlanOption = None, as_json: JsonOption = False) -> None:
    """Check the plan: YAML, fields, durations, references, and that its files exist; and that
    every environment that chooses adapters defines every variable they need (issue 14).

    Exit 0 when valid; 2 with one line naming file, line and field when not.
    """
    from drkit import adapters

    p = load_plan(plan)
    call(adapters.check_plan, p)
    m = p.model
    if as_json:
        print_json({"valid": True, "plan": str(p.path), "sha256": p.sha256,
                    "environments": list(m.environments), "services": list(m.services),
                    "scenarios": list(m.scenarios)})
        return
    typer.echo(
        f"{p.path}: valid ({len(m.environments)} environments, {len(m.services)} services, "
        f"{len(m.scenarios)} scenarios)"
    )


@app.command()
def schema() -> None:
    """Print the plan's JSON Schema (for editors: yaml-language-server $schema)."""
    from drkit.config import json_schema

    print_json(json_schema())
