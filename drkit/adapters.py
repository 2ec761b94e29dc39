"""Adapters per component, chosen per environment (issue 14), and what each one needs.

An environment's inventory chooses an adapter per component (`drkit_adapters: {iac: terraform,
data: rds, traffic: route53, compute: asg}`); each adapter is a folder of task files, one per
step, under playbooks/adapters/<component>/<adapter>/ (run by playbooks/adapters/run.yml);
the lab is adapters too (cloudformation, postgres, haproxy, processes). Before
anything runs, `check_plan` (called by `drkit plan validate`) makes sure every environment that
chooses adapters names ones that exist and defines every variable they read, so a drill never
stops half way on "'drkit_stack_parameters' is undefined".

Variables are looked for, by name, in the inventory's own files: group_vars/all.yml,
group_vars/all/*.yml, and the `vars` of `all` in its YAML inventory files. Values are not
rendered (they may be templates that only the lab's extra vars complete).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from drkit.config import Plan

COMPONENTS = ("iac", "data", "traffic", "compute")
# What every environment with adapters needs, and what each adapter reads on top.
COMMON = ("drkit_region_primary", "drkit_region_secondary", "drkit_entry_url")
REQUIRED: dict[tuple[str, str], tuple[str, ...]] = {
    ("iac", "terraform"): ("drkit_tf_binary", "drkit_tf_project", "drkit_tf_cli_config",
                           "drkit_tf_data_dir", "drkit_tf_state", "drkit_tf_variables"),
    ("iac", "cloudformation"): ("drkit_stack_name", "drkit_stack_template",
                                "drkit_stack_parameters"),
    ("data", "rds"): ("drkit_rds_instances",),
    # An Aurora global database: its identifier and each region's member cluster.
    ("data", "aurora"): ("drkit_aurora_global_cluster", "drkit_aurora_clusters"),
    ("compute", "asg"): ("drkit_asg_names", "drkit_asg_capacity"),
    # The estate's FIS template (stop instances) and the tags that select the primary's.
    ("compute", "fis"): ("drkit_fis_template_id", "drkit_fis_stop_tags"),
    ("traffic", "route53"): ("drkit_dns_zone", "drkit_hostname", "drkit_region_endpoints"),
    # The lab's own components: what they read beyond the drkit_lab_* extra vars drkit passes.
    ("data", "postgres"): (),
    ("traffic", "haproxy"): ("drkit_hostname",),
    ("compute", "processes"): (),
}


@dataclass(frozen=True)
class Problem:
    environment: str
    inventory: Path
    message: str

    def __str__(self) -> str:
        return f"environments.{self.environment} ({self.inventory}): {self.message}"


def inventory_vars(inventory: Path) -> dict[str, Any]:
    """The variables an inventory's own files define for all hosts (unrendered)."""
    files: list[Path] = []
    if inventory.is_dir():
        gv = inventory / "group_vars"
        files += [p for p in (gv / "all.yml", gv / "all.yaml") if p.is_file()]
        if (gv / "all").is_dir():
            files += sorted(p for p in (gv / "all").iterdir() if p.suffix in (".yml", ".yaml"))
        inv_files = sorted(p for p in inventory.iterdir()
                           if p.is_file() and p.suffix in (".yml", ".yaml"))
    else:
        inv_files = [inventory]
    out: dict[str, Any] = {}
    for f in files:
        data = _load(f)
        if isinstance(data, dict):
            out.update(data)
    for f in inv_files:
        data = _load(f)
        if isinstance(data, dict) and isinstance(data.get("all"), dict):
            all_vars = data["all"].get("vars")
            if isinstance(all_vars, dict):
                out.update(all_vars)
    return out


def _load(path: Path) -> Any:
    try:
        if path.stat().st_size > 1 << 20:  # not an inventory: a YAML bomb or a data file
            return None
        from drkit.config import load_yaml

        return load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError, yaml.YAMLError):
        # Not an inventory file we can read (binary, not UTF-8, not YAML): Ansible would not
        # take variables from it either; the plan's own checks report what matters.
        return None


def check_inventory(env: str, inventory: Path, content_root: Path) -> list[Problem]:
    """Problems of one environment's adapter choice (none when it chooses no adapters)."""
    found = inventory_vars(inventory)
    chosen = found.get("drkit_adapters")
    if chosen is None:
        return []
    if not isinstance(chosen, dict):
        return [Problem(env, inventory, "drkit_adapters must map components to adapters, "
                                        f"e.g. {{iac: terraform, data: rds}}; got {chosen!r}")]
    problems = []
    needed: list[tuple[str, str]] = [("", v) for v in COMMON]
    for component, adapter in chosen.items():
        if component not in COMPONENTS:
            problems.append(Problem(env, inventory, f"drkit_adapters.{component}: unknown "
                                    f"component (use {', '.join(COMPONENTS)})"))
            continue
        folder = content_root / "playbooks" / "adapters" / component / str(adapter)
        if (component, adapter) not in REQUIRED and not folder.is_dir():
            known = sorted(a for c, a in REQUIRED if c == component)
            problems.append(Problem(env, inventory, f"drkit_adapters.{component}: no adapter "
                                    f"{adapter!r} (known: {', '.join(known)})"))
            continue
        needed += [(f"{component}/{adapter}", v) for v in REQUIRED.get((component, adapter), ())]
    for who, var in needed:
        if var not in found:
            why = f"the {who} adapter needs it" if who else "every adapter needs it"
            problems.append(Problem(env, inventory, f"{var} is not defined ({why}): set it in "
                                    f"{inventory}/group_vars/all.yml"))
    return problems


def check_plan(plan: Plan) -> list[Problem]:
    """Every environment's adapter problems; raises PlanError (exit 2) naming the first."""
    from drkit import engine
    from drkit.errors import PlanError

    content = plan.root if (plan.root / "playbooks").is_dir() else engine.CONTENT
    problems: list[Problem] = []
    for name in plan.model.environments:
        problems += check_inventory(name, plan.inventory(name), content)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise PlanError(f"{plan.path.name}: {problems[0]}{more}")
    return problems
