"""Execution nodes (issue 18): where an environment's playbooks run when not on the controller.

A node is a machine in a region, reached over SSH, with drkit (and so ansible-runner) installed.
drkit.engine runs a playbook there with ansible-runner's streaming interface, the mechanism
Automation Controller uses behind Receptor: `transmit` packs the job on the controller (its
private folder: extra vars, inventory, settings), `ssh node python -m ansible_runner worker`
runs it on the node reading stdin and writing the job's events and artifacts to stdout, and
`process` on the controller turns that stream back into events and artifacts, so a remote run
gives the same RunResult as a local one (tasks, timings, stats, stdout, set_stats values).

This module only describes nodes and builds the ssh command; it imports no ansible_runner
(only drkit/engine.py does) and starts nothing.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from drkit.errors import PlanError

if TYPE_CHECKING:
    from drkit.config import ExecutionNode, Plan

# drkit's content on the controller (the same root drkit.engine uses)
CONTENT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Node:
    """One execution node, as the plan names it, with paths resolved on the controller."""

    region: str
    host: str
    user: str = "root"
    port: int = 22
    identity_file: str | None = None
    ssh_executable: str = "ssh"
    ssh_options: tuple[str, ...] = ()
    python: str = "python3"
    content_root: str = str(CONTENT)
    state_dir: str = "/var/tmp/drkit-node"

    @property
    def name(self) -> str:
        return f"{self.user}@{self.host} ({self.region})"

    def ssh_argv(self, command: list[str]) -> list[str]:
        """ssh ... host -- <command, quoted for the node's shell>."""
        argv = [self.ssh_executable, "-p", str(self.port), "-l", self.user,
                "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                # A dead link must end the run's stream (the processor then reports an error)
                # rather than hang it.
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
        if self.identity_file:
            argv += ["-i", self.identity_file, "-o", "IdentitiesOnly=yes"]
        for opt in self.ssh_options:
            argv += ["-o", opt]
        return [*argv, self.host, "--", shlex.join(command)]

    def worker_argv(self) -> list[str]:
        """The node's end of a streamed run: ansible-runner's worker on stdin/stdout, behind
        drkit.node_worker, which kills the run when the stream ends early (a cancel)."""
        return self.ssh_argv([self.python, "-m", "drkit.node_worker"])

    def path(self, local: Path) -> str:
        """Where a file of drkit's content is on the node (the same relative place under its
        content root); a path outside the content stays as it is (the node must have it)."""
        resolved = local.resolve()
        try:
            rel = resolved.relative_to(CONTENT)
        except ValueError:
            return str(resolved)
        return str(Path(self.content_root) / rel)

    def python_bindir(self) -> str:
        return str(Path(self.python).parent) if "/" in self.python else ""


def from_config(region: str, cfg: ExecutionNode, plan: Plan | None = None) -> Node:
    ident = cfg.identity_file
    if ident and plan is not None:
        ident = str(plan.resolve(ident))
    return Node(region=region, host=cfg.host, user=cfg.user, port=cfg.port,
                identity_file=ident, ssh_executable=cfg.ssh_executable,
                ssh_options=tuple(cfg.ssh_options), python=cfg.python,
                content_root=cfg.content_root or str(CONTENT), state_dir=cfg.state_dir)


def node_for(plan: Plan, environment: str, region: str) -> Node | None:
    cfg = plan.environment(environment).execution_nodes.get(region)
    return from_config(region, cfg, plan) if cfg is not None else None


def surviving_node(plan: Plan, environment: str) -> Node | None:
    """The node a drill runs on: the one in the region it fails over TO (the secondary), never
    in the region it breaks. None: the environment runs its playbooks on the controller."""
    env = plan.environment(environment)
    if not env.execution_nodes:
        return None
    node = node_for(plan, environment, plan.model.regions.secondary)
    if node is None:
        raise PlanError(
            f"{plan.path.name}: environments.{environment}.execution_nodes names no node in "
            f"{plan.model.regions.secondary} (the secondary region): a drill must not run from "
            f"the region it breaks ({plan.model.regions.primary}); add one")
    return node


def nodes(plan: Plan, environment: str) -> list[Node]:
    """Every node of the environment, in the plan's order (runbooks spread hosts over them)."""
    return [from_config(r, c, plan)
            for r, c in plan.environment(environment).execution_nodes.items()]


__all__ = ["Node", "from_config", "node_for", "nodes", "surviving_node"]
