"""The plan's JSON Schema describes the plans we ship (issue 11): every plan in the repository
and in the docs validates against `drkit plan schema` with a standard validator (jsonschema),
and the shipped schema file (schema/drkit-plan.schema.json, for yaml-language-server) is the
one the code prints."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from drkit.config import json_schema

REPO = Path(__file__).resolve().parents[1]
SCHEMA_FILE = REPO / "schema" / "drkit-plan.schema.json"
# Not plans we ship: content, and the tests' own (deliberately broken) plans.
SKIP = {".venv", ".git", "node_modules", "playbooks", "inventories", "runbooks", "collections",
        "tests", "build", "drkit.egg-info"}


def _plans() -> list[tuple[str, Any]]:
    """Whole plans (version + scenarios) in YAML files and in the docs' ```yaml blocks."""
    found: list[tuple[str, Any]] = []
    for path in sorted(REPO.rglob("*.y*ml")):
        rel = path.relative_to(REPO)
        if rel.parts[0] in SKIP or path.suffix not in (".yml", ".yaml"):
            continue
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError, ValueError, RecursionError):
            continue
        if isinstance(data, dict) and "version" in data and "scenarios" in data:
            found.append((str(rel), data))
    for doc in sorted([*(REPO / "docs").rglob("*.md"), *REPO.glob("*.md")]):
        text = doc.read_text(encoding="utf-8")
        for i, block in enumerate(re.findall(r"```ya?ml\n(.*?)```", text, re.S)):
            try:
                data = yaml.safe_load(block)
            except (yaml.YAMLError, ValueError):
                continue
            if isinstance(data, dict) and "version" in data and "scenarios" in data:
                found.append((f"{doc.relative_to(REPO)}#block{i + 1}", data))
    return found


PLANS = _plans()


def test_the_shipped_plan_is_found() -> None:
    assert "drkit.yml" in [name for name, _ in PLANS]


@pytest.mark.parametrize(("name", "data"), PLANS, ids=[n for n, _ in PLANS])
def test_every_shipped_plan_validates_against_the_schema(name: str, data: Any) -> None:
    validator = jsonschema.Draft202012Validator(json_schema())
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(data)]
    assert errors == [], f"{name}: {errors}"


def test_the_schema_is_valid_and_rejects_a_bad_duration() -> None:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    plan = yaml.safe_load((REPO / "drkit.yml").read_text())
    plan["services"]["payments"]["rto"] = "5 minutes"
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(plan))


def test_the_schema_file_is_the_one_the_code_prints() -> None:
    """Regenerate with: drkit plan schema > schema/drkit-plan.schema.json"""
    printed = subprocess.run([str(Path(sys.executable).parent / "drkit"), "plan", "schema"],
                             capture_output=True, text=True, check=True).stdout
    assert json.loads(printed) == json.loads(SCHEMA_FILE.read_text()) == json_schema()
