"""Reliability suite (issue 7): shared sandbox, and the figures its parts save.

The suite has three parts (tests/reliability/report.py names them): input (test_fuzz,
test_catalogue, test_hostile_evidence, test_secrets), kill and load (test_drill_survival's
test_kill_* and test_load_* tests). Tests add their figures to the session's `figures` as they
run. When every collected test of a part ran and passed, the session saves that part's figures
to an untracked folder (report.figures_dir(): $DRKIT_RELIABILITY_FIGURES or
.pytest_cache/drkit-reliability/). A run of a subset (`-k`, `-m`, one file) or a run with a
failure saves nothing for that part: the figures would not be the whole part's. Nothing here
writes RELIABILITY.md: `bench/reliability.py` does, when a person runs it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

# Re-exported: test_catalogue checks the section writer.
from .report import END, START, TITLE, figures_dir, save, write_section

__all__ = ["END", "START", "TITLE", "write_section"]

REPO = Path(__file__).resolve().parents[2]
INPUT_MODULES = ("test_fuzz", "test_catalogue", "test_hostile_evidence", "test_secrets")


class Figures:
    """What the tests add to: `counts` (input part; fixed names used by the report) and one
    dict per other part (`part("kill")`, `part("load")`)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.parts: dict[str, dict[str, Any]] = {}

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def part(self, name: str) -> dict[str, Any]:
        return self.parts.setdefault(name, {})

    def of(self, part: str) -> dict[str, Any]:
        return dict(self.counts) if part == "input" else dict(self.parts.get(part, {}))


FIGURES = Figures()
_collected: dict[str, set[str]] = {}
_passed: set[str] = set()
_failed: set[str] = set()


def part_of(nodeid: str) -> str | None:
    """Which part of the suite a test belongs to (None: not one whose figures are reported)."""
    m = re.match(r"^(?:.*/)?tests/reliability/(\w+)\.py::(\w+)", nodeid)
    if not m:
        return None
    module, test = m.groups()
    if module in INPUT_MODULES:
        return "input"
    if module == "test_drill_survival":
        for part in ("kill", "load"):
            if test.startswith(f"test_{part}_"):
                return part
    return None


@pytest.fixture(scope="session")
def figures() -> Figures:
    return FIGURES


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if part := part_of(item.nodeid):
            _collected.setdefault(part, set()).add(item.nodeid)


def pytest_deselected(items: list[pytest.Item]) -> None:
    # `-k`/`-m` leave a subset: its figures are not the part's.
    for item in items:
        if part_of(item.nodeid):
            _failed.add(item.nodeid)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not part_of(report.nodeid):
        return
    if report.failed:
        _failed.add(report.nodeid)
    elif report.when == "call" and report.passed:
        _passed.add(report.nodeid)


def complete_parts() -> list[str]:
    """Parts whose every test was collected, none deselected or failed, and all passed."""
    done = []
    for part, nodeids in _collected.items():
        modules = {n.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py") for n in nodeids}
        if part == "input" and modules != set(INPUT_MODULES):
            continue  # one input module alone is not the part
        if nodeids <= _passed and not any(part_of(n) == part for n in _failed):
            done.append(part)
    return sorted(done)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    for part in complete_parts():
        if part != "input" and not FIGURES.parts.get(part):
            continue  # its summary test did not see every case (e.g. one case by node id)
        save(figures_dir(), part, FIGURES.of(part), finished=when,
             tests=len(_collected[part]))


# ---------------------------------------------------------------- a sandbox for CLI calls

SANDBOX_PLAN = """\
version: 1
name: reliability-sandbox
regions: {primary: eu-west-1, secondary: eu-central-1}
environments:
  lab: {inventory: inventory.yml, lab: true}
  prod: {inventory: inventory.yml, protected: true}
lab: {state_dir: ./lab-state, port_base: 64900}
services:
  payments: {tier: 1, rto: 30s, rpo: 0s}
scenarios:
  region-failover:
    services: [payments]
    phases:
      - {name: preflight, playbook: pb/preflight.yml}
      - {name: inject-fault, playbook: pb/inject.yml, starts_clock: true}
      - {name: smoke, playbook: pb/smoke.yml, stops_clock: true}
    rollback: pb/rollback.yml
evidence:
  store: ./evidence
  signing_key: keys/evidence.key
"""


def make_sandbox(root: Path) -> Path:
    """A valid plan whose every playbook fails at once on no hosts: if a generated case ever
    got past validation, nothing could happen anywhere."""
    (root / "pb").mkdir(parents=True, exist_ok=True)
    for name in ("preflight", "inject", "smoke", "rollback"):
        (root / "pb" / f"{name}.yml").write_text(
            "- name: Refuse to run in the reliability sandbox\n  hosts: nowhere\n"
            "  gather_facts: false\n  tasks: []\n")
    (root / "inventory.yml").write_text("all:\n  hosts: {}\n")
    (root / "drkit.yml").write_text(SANDBOX_PLAN)
    from drkit.evidence import generate_keypair

    generate_keypair(root / "keys" / "evidence.key")
    return root / "drkit.yml"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A sandbox plan, the working directory and every DRKIT_* knob pointed into a temp dir,
    so no CLI call can touch a developer's lab, evidence or keys."""
    root = tmp_path_factory.mktemp("sandbox")
    plan = make_sandbox(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("DRKIT_PLAN", str(plan))
        mp.setenv("DRKIT_LAB_DIR", str(root / "lab-state"))
        mp.setenv("DRKIT_LAB_PORT_BASE", "64900")  # nothing of ours listens up there
        mp.setenv("DRKIT_OPERATOR", "reliability-fuzzer")
        yield root
