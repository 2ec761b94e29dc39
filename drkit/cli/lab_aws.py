"""`drkit lab-aws up | status`: the AWS-shaped lab (a Terraform-built estate its lab follows)."""

from __future__ import annotations

from typing import Any

import typer

from drkit.cli._common import JsonOption, PlanOption, call, load_plan, new_app, print_json

app = new_app("The AWS-shaped lab: a Terraform-built estate on moto that the lab follows.")


def _render(st: Any) -> None:
    for region, out in sorted((st.estate.get("regions") or {}).items()):
        typer.echo(f"{region}: {out.get('role')}  asg {out.get('asg_name')}  db "
                   f"{out.get('db_identifier')}  endpoint {out.get('region_endpoint')}")
    seen = st.follower or {}
    if seen:
        typer.echo(f"Route53 -> {seen.get('route53_active')}; entry point -> "
                   f"{seen.get('haproxy_active')}; instances {seen.get('instances_running')} "
                   f"(Auto Scaling wants {seen.get('asg_desired')})")
    typer.echo(st.message)


@app.command()
def up(plan: PlanOption = None, as_json: JsonOption = False) -> None:
    """Bring the lab up, start the follower and build the estate with Terraform (idempotent).

    Needs Terraform (or OpenTofu: DRKIT_TF_BINARY=tofu) and the hashicorp/aws provider in a
    filesystem mirror (/opt/tf-plugins, or DRKIT_TF_PLUGIN_MIRROR). The first build takes a few
    minutes (Terraform's waiters against moto); then `drkit drill run --env lab-aws`.
    """
    from drkit.lab import aws_shaped

    p = load_plan(plan)
    st = call(aws_shaped.up, p)
    if as_json:
        print_json(st.to_json())
        return
    _render(st)


@app.command()
def status(plan: PlanOption = None, as_json: JsonOption = False) -> None:
    """What the follower sees and did; exit 1 when the lab does not match the estate."""
    from drkit.lab import aws_shaped

    p = load_plan(plan)
    st = call(aws_shaped.status, p)
    if as_json:
        print_json(st.to_json())
    else:
        _render(st)
    if not st.up:
        raise typer.Exit(1)
