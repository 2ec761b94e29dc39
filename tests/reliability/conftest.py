"""Reliability suite (issue 7): shared sandbox, and the figures it writes to RELIABILITY.md.

The hostile-input tests (test_fuzz, test_catalogue, test_hostile_evidence, test_secrets) add
their figures to `figures` as they run. When every test of those four modules ran and passed,
the session rewrites ONLY its own section of RELIABILITY.md, between the markers below; other
sections (kill points, sustained load) belong to other tests and are left as they are. A run
of a subset (`-k`, one file) or a run with a failure leaves the file alone: the figures would
not be "from the last run" of the whole suite.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REPORT = REPO / "RELIABILITY.md"
START, END = "<!-- input:start -->", "<!-- input:end -->"
INPUT_MODULES = ("test_fuzz", "test_catalogue", "test_hostile_evidence", "test_secrets")

TITLE = """# drkit reliability

A DR tool must never become the incident. The reliability suite (`tests/reliability/`,
issue 7) kills drkit at every phase of a drill, feeds it hostile plans, arguments and evidence,
runs drills back to back under load, and hunts for leaked secrets. Each section below is
rewritten by its part of the suite, from the last run in which that whole part passed.
"""


class Figures:
    """Counters the tests add to; `counts` keys are fixed names used by the report."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] += n


FIGURES = Figures()
_collected: set[str] = set()
_passed: set[str] = set()
_failed: set[str] = set()


def _module(nodeid: str) -> str | None:
    m = re.match(r"^(?:.*/)?tests/reliability/(\w+)\.py::", nodeid)
    return m.group(1) if m and m.group(1) in INPUT_MODULES else None


@pytest.fixture(scope="session")
def figures() -> Figures:
    return FIGURES


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _module(item.nodeid):
            _collected.add(item.nodeid)


def pytest_deselected(items: list[pytest.Item]) -> None:
    # `-k`/`-m` leave a subset: its figures are not the suite's.
    for item in items:
        if _module(item.nodeid):
            _failed.add(item.nodeid)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not _module(report.nodeid):
        return
    if report.failed:
        _failed.add(report.nodeid)
    elif report.when == "call" and report.passed:
        _passed.add(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    modules = {_module(n) for n in _collected}
    complete = modules == set(INPUT_MODULES) and _collected == _passed and not _failed
    if complete and not os.environ.get("DRKIT_RELIABILITY_NO_REPORT"):
        write_section(REPORT, render(FIGURES.counts))


def render(c: Counter[str]) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = [
        ("fuzz cases tried (hypothesis, derandomized)", c["fuzz_plan"] + c["fuzz_argv"]),
        ("- plan files: random YAML, mutated plans, random bytes", c["fuzz_plan"]),
        ("- CLI arguments: every command, unknown options, bad durations, dates and names",
         c["fuzz_argv"]),
        ("fuzz cases ending in a traceback, or not in exit 0/2 with its one line", 0),
        ("hand-written catalogue cases passed (exact exit code and expected line)",
         c["catalogue"]),
        ("hostile evidence stores through verify/list/show/export (each reported, none crashed)",
         c["hostile_store"]),
        ("hostile artifact names and store keys refused", c["hostile_names"]),
        ("symlinks planted mid-run to redirect writes (each refused)", c["hostile_symlinks"]),
        ("files written outside an evidence store", 0),
        ("canary secrets planted (env, extra vars, summary, artifacts, messages, no_log)",
         c["canaries"]),
        ("files searched (store, run artifacts, HTML/MD/JSON/JUnit, terminal output)",
         c["files_searched"]),
        ("canary secrets leaked", 0),
    ]
    table = "\n".join(f"| {what} | {n} |" for what, n in rows)
    return f"""## Hostile input, hostile evidence, secrets

From the last run of the input part of the suite ({when}): `tests/reliability/`
`test_fuzz.py`, `test_catalogue.py`, `test_hostile_evidence.py` and `test_secrets.py`, every
test passed.

| what | figure |
| --- | --- |
{table}
"""


def write_section(path: Path, body: str, name: str = "input") -> None:
    """Replace the text between the `name` markers (create the file, or the markers, first).
    Each part of the suite owns one section: input (here), kill and load (the survival tests)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text(encoding="utf-8") if path.exists() else TITLE
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text and text.index(start) < text.index(end):
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


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
