"""Where an environment lives, as drkit reaches it from Python: its inventory, state folder,
extra vars, entry point and secrets. Drills, runbooks and the certificate scan resolve a target
here (none of them imports another to do it)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from drkit import engine
from drkit.config import Plan


@dataclass(frozen=True)
class Target:
    """What drkit needs to reach an environment from Python: its vars, its entry point."""

    environment: str
    inventory: Path
    state_dir: Path
    extravars: dict[str, Any]
    envvars: dict[str, str]
    entry_url: str | None
    ca_file: str | None
    secrets: tuple[str, ...] = ()
    api_token: str | None = None  # the entry point's bearer token (the lab's API needs one)
    # The environment's flow pack (issue 14) as plain data, its vars completed with the
    # environment's flow_vars and state_dir; None when it declares none (no smoke flows, no
    # canary: the verdict says what was not observed). Secret values are never in it.
    flow_pack: dict[str, Any] | None = None
    # `target: aws` (issue 14): the AWS_* variables its AWS calls use, for the evidence to
    # record who ran it (sts get-caller-identity); {} is this process's usual chain. None: not
    # an AWS target.
    aws_env: dict[str, str] | None = None

    def pack(self) -> Any:
        """The flow pack as drkit.flows.FlowPack, or None."""
        if self.flow_pack is None:
            return None
        from drkit import flows

        return flows.FlowPack.from_json(self.flow_pack)


def target(plan: Plan, env_name: str) -> Target:
    tgt = _target(plan, env_name)
    env = plan.environment(env_name)
    if env.target == "aws":
        aws = {k: v for k, v in tgt.envvars.items() if k.startswith("AWS_")}
        if env.lab:
            # The AWS-shaped lab: its estate's moto answers the AWS calls, and STS too.
            from drkit.config import lab_config
            from drkit.lab.aws_shaped import estate_port

            aws["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{estate_port(lab_config(plan))}"
        tgt = replace(tgt, aws_env=aws)
    pack = plan.flow_pack(env_name)
    if pack is None:
        return tgt
    data = pack.model_dump(mode="json", by_alias=True)
    data["vars"] = {**data["vars"], **plan.environment(env_name).flow_vars,
                    "state_dir": str(tgt.state_dir)}
    # What the pack's secrets hold now, to be redacted from evidence should one ever show up
    # there (the flows scrub them from their results already); one that cannot be read yet is
    # reported when the flows run.
    from drkit import flows
    from drkit.errors import DrkitError

    known: list[str] = []
    for s in flows.FlowPack.from_json(data).secrets:
        try:
            known += flows.FlowPack("", {}, data["vars"], secrets=(s,)).resolve_secrets().values()
        except DrkitError:
            continue
    return replace(tgt, flow_pack=data, secrets=tgt.secrets + tuple(known))


def _target(plan: Plan, env_name: str) -> Target:
    env = plan.environment(env_name)
    inventory = plan.inventory(env_name)
    # The templates and task files the inventories name live with drkit's content: next to the
    # plan when it ships its own, else next to the package (a plan kept outside the checkout).
    content = plan.root if (plan.root / "playbooks").is_dir() else engine.CONTENT
    base = {"drkit_content_root": str(content), "drkit_environment": env_name}
    if env.lab:
        from drkit import lab
        from drkit.config import lab_config

        cfg = lab_config(plan)
        return Target(
            environment=env_name,
            inventory=inventory,
            state_dir=cfg.state_dir,
            extravars={**lab.extravars(plan), **base},
            envvars=lab.envvars(plan),
            # (from inside the lab's network, issue 18: the edge's address)
            entry_url=f"https://{lab._netns().service_host(cfg)}:{cfg.ports['https']}",
            ca_file=str(cfg.state_dir / "ca" / "ca.crt"),
            secrets=tuple(getattr(lab, "secrets", lambda _p: ())(plan)),
            api_token=lab.api_token(plan),
        )
    state = plan.root / ".drkit"
    return Target(environment=env_name, inventory=inventory, state_dir=state,
                  extravars=base, envvars={}, entry_url=env.entry_url, ca_file=env.ca_file)
