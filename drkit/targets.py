"""Where an environment lives, as drkit reaches it from Python: its inventory, state folder,
extra vars, entry point and secrets. Drills, runbooks and the certificate scan resolve a target
here (none of them imports another to do it)."""

from __future__ import annotations

from dataclasses import dataclass
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


def target(plan: Plan, env_name: str) -> Target:
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
            entry_url=f"https://127.0.0.1:{cfg.ports['https']}",
            ca_file=str(cfg.state_dir / "ca" / "ca.crt"),
            secrets=tuple(getattr(lab, "secrets", lambda _p: ())(plan)),
            api_token=lab.api_token(plan),
        )
    state = plan.root / ".drkit"
    return Target(environment=env_name, inventory=inventory, state_dir=state,
                  extravars=base, envvars={}, entry_url=env.entry_url, ca_file=env.ca_file)
