"""The plan file: a catalogue of bad plans, each with the one line it must produce (exit 2).

Each file under tests/data/plans/ is a plan with one defect; CATALOGUE names the part of the
message that tells the user what is wrong and where (file, line, field).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from drkit.cli import app
from drkit.config import lab_config, load_plan, parse_duration
from drkit.errors import PlanError

PLANS = Path(__file__).parent / "data" / "plans"

# file -> substrings the message must hold (the file name is always checked too)
CATALOGUE: dict[str, tuple[str, ...]] = {
    "wrong-type.yml": ("wrong-type.yml:10 lab.port_base:", "should be a valid integer",
                       "'lots'"),
    "unknown-key.yml": ("unknown-key.yml:15 servces:", "unknown field"),
    "unknown-service.yml": ("scenarios.region-failover.services", "unknown service 'billing'",
                            "(declared: payments)"),
    "unknown-smoke-flow.yml": ("unknown-smoke-flow.yml:14 services.payments.smoke",
                               "unknown smoke flow 'teleport'"),
    "missing-playbook.yml": ("missing-playbook.yml:19 scenarios.region-failover.phases.1.playbook",
                             "playbooks/nope.yml does not exist"),
    "missing-inventory.yml": ("missing-inventory.yml:7 environments.lab.inventory",
                              "inventories/nowhere does not exist"),
    "duration-words.yml": ("duration-words.yml:12 services.payments.rto",
                           "'5 minutes' is not a duration", "90s, 5m, 1h"),
    "negative-rto.yml": ("negative-rto.yml:12 services.payments.rto",
                         "'-30s' is not a duration"),
    "negative-number-rto.yml": ("negative-number-rto.yml:12 services.payments.rto",
                                "is negative"),
    "zero-rto.yml": ("zero-rto.yml:12 services.payments.rto", "must be more than 0s"),
    "same-regions.yml": ("same-regions.yml:2 regions", "must be different regions"),
    "clock-backwards.yml": ("scenarios.region-failover", "the clock must start before it stops"),
    "anchor-bomb.yml": ("expands to more than", "aliases/anchors"),
    "binary.yml": ("is a binary file, not YAML",),
    "not-a-mapping.yml": ("not-a-mapping.yml:1", "must be a mapping"),
    "empty.yml": ("empty.yml:1", "must be a mapping"),
    "invalid-yaml.yml": ("invalid-yaml.yml:3", "not valid YAML"),
}


def test_every_bad_plan_in_the_directory_is_catalogued() -> None:
    on_disk = {p.name for p in PLANS.glob("*.yml")} - {"valid-minimal.yml"}
    assert on_disk == set(CATALOGUE)


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_bad_plan_gets_one_line_naming_what_is_wrong(name: str) -> None:
    with pytest.raises(PlanError) as info:
        load_plan(PLANS / name)
    message = str(info.value)
    assert "\n" not in message
    assert name in message
    for part in CATALOGUE[name]:
        assert part in message, message
    assert info.value.exit_code == 2


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_bad_plan_exits_2_from_the_cli_without_a_traceback(name: str) -> None:
    res = CliRunner().invoke(app, ["plan", "validate", "--plan", str(PLANS / name)])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("drkit: "), res.output
    assert CATALOGUE[name][0] in lines[0]


def test_the_lab_commands_reject_a_bad_plan_with_exit_2() -> None:
    res = CliRunner().invoke(app, ["lab", "status", "--plan", str(PLANS / "duration-words.yml")])
    assert res.exit_code == 2 and "'5 minutes' is not a duration" in res.output


def test_a_missing_plan_file_says_how_to_point_at_one(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["plan", "validate", "--plan", str(tmp_path / "nope.yml")])
    assert res.exit_code == 2
    assert "plan file not found" in res.output and "--plan" in res.output


def test_the_valid_minimal_plan_and_the_repository_plan_load() -> None:
    plan = load_plan(PLANS / "valid-minimal.yml")
    assert plan.model.services["payments"].rto == 30.0
    repo = load_plan(Path(__file__).parents[1] / "drkit.yml")
    assert repo.lab_environment() == "lab"
    res = CliRunner().invoke(app, ["plan", "validate", "--plan", str(PLANS / "valid-minimal.yml")])
    assert res.exit_code == 0 and "valid" in res.output


def test_unknown_environment_and_scenario_name_what_is_declared() -> None:
    plan = load_plan(PLANS / "valid-minimal.yml")
    with pytest.raises(PlanError, match=r"unknown environment 'prod' \(declared: lab\)"):
        plan.environment("prod")
    with pytest.raises(PlanError, match=r"unknown scenario 'region-failover' \(declared: \)"):
        plan.scenario("region-failover")


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("5m", 300), ("1h", 3600),
                                                ("250ms", 0.25), (30, 30), ("2d", 172800)])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5 minutes", "soon", "", True, "-1s", "1w"])
def test_not_durations(text: object) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_lab_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = load_plan(PLANS / "valid-minimal.yml")
    monkeypatch.setenv("DRKIT_LAB_PORT_BASE", "31000")
    monkeypatch.setenv("DRKIT_LAB_INSTANCES", "3")
    monkeypatch.setenv("DRKIT_LAB_REPLICATION", "async")
    cfg = lab_config(plan)
    assert cfg.ports["moto"] == 31000 and cfg.ports["https"] == 31001
    assert cfg.ports["api_primary_3"] == 31013 and cfg.ports["api_secondary_1"] == 31031
    assert "api_primary_4" not in cfg.ports and cfg.replication == "async"
    monkeypatch.setenv("DRKIT_LAB_PORT_BASE", "80")
    with pytest.raises(PlanError, match="out of range"):
        lab_config(plan)
    monkeypatch.setenv("DRKIT_LAB_PORT_BASE", "31000")
    monkeypatch.setenv("DRKIT_LAB_REPLICATION", "sometimes")
    with pytest.raises(PlanError, match="use sync or async"):
        lab_config(plan)
