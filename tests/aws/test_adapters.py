"""`drkit plan validate` checks that an environment defines every variable its adapters need
(issue 14), before anything runs. No lab: plain files and the real command."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from drkit import adapters
from drkit.cli import app
from tests.conftest import REPO


def test_shipped_inventories_define_what_their_adapters_need() -> None:
    for inv in ("aws-example", "lab-aws"):
        assert adapters.check_inventory(inv, REPO / "inventories" / inv, REPO) == []
    chosen = adapters.inventory_vars(REPO / "inventories" / "aws-example")["drkit_adapters"]
    assert chosen == {"iac": "terraform", "data": "rds", "traffic": "route53", "compute": "asg"}
    # The lab-aws inventory makes the same choices as the real-account example.
    assert adapters.inventory_vars(REPO / "inventories" / "lab-aws")["drkit_adapters"] == chosen


def _plan_with(tmp_path: Path, group_vars: dict[str, object]) -> Path:
    for name in ("playbooks", "iac"):
        (tmp_path / name).symlink_to(REPO / name)
    inv = tmp_path / "inventories" / "mine"
    (inv / "group_vars").mkdir(parents=True)
    shutil.copy(REPO / "inventories" / "aws-example" / "localhost.yml", inv / "localhost.yml")
    (inv / "group_vars" / "all.yml").write_text(yaml.safe_dump(group_vars))
    data = yaml.safe_load((REPO / "drkit.yml").read_text())
    data["environments"] = {"mine": {"inventory": "inventories/mine"}}
    plan = tmp_path / "drkit.yml"
    plan.write_text(yaml.safe_dump(data, sort_keys=False))
    return plan


def test_plan_validate_names_a_variable_an_adapter_needs(tmp_path: Path) -> None:
    gv = yaml.safe_load((REPO / "inventories/aws-example/group_vars/all.yml").read_text())
    del gv["drkit_asg_names"]
    plan = _plan_with(tmp_path, gv)
    res = CliRunner().invoke(app, ["plan", "validate", "--plan", str(plan)])
    assert res.exit_code == 2, res.output
    assert "environments.mine" in res.output
    assert "drkit_asg_names is not defined (the compute/asg adapter needs it)" in res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize("choice, message", [
    ({"iac": "pulumi"}, "drkit_adapters.iac: no adapter 'pulumi' (known: cloudformation, "
                        "terraform)"),
    ({"network": "vpc"}, "drkit_adapters.network: unknown component"),
])
def test_plan_validate_refuses_unknown_adapters(tmp_path: Path, choice: dict[str, str],
                                                message: str) -> None:
    gv = yaml.safe_load((REPO / "inventories/aws-example/group_vars/all.yml").read_text())
    gv["drkit_adapters"] = choice
    res = CliRunner().invoke(app, ["plan", "validate", "--plan", str(_plan_with(tmp_path, gv))])
    assert res.exit_code == 2 and message in res.output, res.output


def test_an_environment_without_adapters_is_not_checked(tmp_path: Path) -> None:
    plan = _plan_with(tmp_path, {"drkit_target": "lab"})
    res = CliRunner().invoke(app, ["plan", "validate", "--plan", str(plan)])
    assert res.exit_code == 0, res.output
