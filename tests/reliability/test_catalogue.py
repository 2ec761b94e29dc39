"""The hand-written catalogue of hostile input (tests/data/catalogue, issue 7).

Each case names its exit code and the parts of the one line it must print; see
tests/data/catalogue/cases.yml. Plans go through `drkit plan validate --plan FILE`, command
lines through the whole app, both in-process (a traceback fails the test).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from drkit.cli import app

CATALOGUE = Path(__file__).resolve().parents[1] / "data" / "catalogue"
CASES = yaml.safe_load((CATALOGUE / "cases.yml").read_text(encoding="utf-8"))
ARGV = {p.stem: yaml.safe_load(p.read_text(encoding="utf-8"))
        for p in sorted((CATALOGUE / "argv").glob("*.yml"))}


def invoke(argv: list[str]) -> Any:
    return CliRunner().invoke(app, argv, catch_exceptions=False)


def check(res: Any, case: dict, file: str = "", usage: bool = False) -> None:
    """The exit code, then exactly one line (stderr for errors) holding every expected part.

    A case with `notes: true` may print `drkit: note: ...` lines before its error (a command
    that uses a store first tries to recover interrupted runs, and says when it cannot)."""
    assert res.exit_code == case["exit"], (res.exit_code, res.stdout, res.stderr)
    assert "Traceback" not in res.output
    expect = [e.replace("{file}", file) for e in case["expect"]]
    if case["exit"] == 0:
        lines = res.stdout.splitlines()
        assert res.stderr == ""
    elif usage:
        # Click's usage errors: a usage line, a hint, then `Error: <what>` last.
        lines = res.stderr.splitlines()[-1:]
        assert lines[0].startswith("Error: "), res.stderr
    else:
        lines = res.stderr.splitlines()
        if case.get("notes"):
            lines = [line for line in lines if not line.startswith("drkit: note: ")]
        assert res.stdout == "", res.stdout
        assert lines and lines[0].startswith("drkit: "), res.stderr
    assert len(lines) == 1, lines
    for part in expect:
        assert part in lines[0], f"{part!r} not in {lines[0]!r}"


def test_every_file_is_a_case_and_every_case_a_file() -> None:
    on_disk = {p.name for p in (CATALOGUE / "plans").glob("*.yml")}
    assert on_disk == set(CASES["plans"])
    assert len(ARGV) >= 20 and all({"argv", "exit", "expect"} <= set(c) for c in ARGV.values())


@pytest.mark.parametrize("name", sorted(CASES["plans"]))
def test_plan_case(name: str, figures: Any) -> None:
    path = CATALOGUE / "plans" / name
    # An absolute path: the message names the file as given, and paths inside are absolute.
    check(invoke(["plan", "validate", "--plan", str(path)]), CASES["plans"][name], str(path))
    figures.add("catalogue")


def test_a_50_megabyte_plan(tmp_path: Path, figures: Any) -> None:
    path = tmp_path / "drkit.yml"
    with path.open("wb") as f:  # real text, not a sparse file: the size check must come first
        chunk = b"# padding padding padding padding padding padding padding padding\n" * 16384
        while f.tell() < 50 * 1024 * 1024:
            f.write(chunk[: 50 * 1024 * 1024 - f.tell()])
    assert path.stat().st_size == 52428800
    check(invoke(["plan", "validate", "--plan", str(path)]),
          CASES["generated"]["fifty-megabytes"], str(path))
    figures.add("catalogue")


def test_a_directory_given_as_the_plan(tmp_path: Path, figures: Any) -> None:
    check(invoke(["plan", "validate", "--plan", str(tmp_path)]),
          CASES["generated"]["a-directory"], str(tmp_path))
    figures.add("catalogue")


def test_a_plan_that_is_not_there(tmp_path: Path, figures: Any) -> None:
    path = tmp_path / "nope" / "drkit.yml"
    check(invoke(["plan", "validate", "--plan", str(path)]), CASES["generated"]["not-found"],
          str(path))
    figures.add("catalogue")


def _request(sandbox: Path) -> str:
    """A pending request by someone else, so `approve` reaches its --expires arithmetic."""
    os.environ["DRKIT_OPERATOR"] = "requester"
    try:
        res = invoke(["drill", "request", "region-failover", "--env", "lab", "--reason",
                      "catalogue", "--json"])
    finally:
        os.environ["DRKIT_OPERATOR"] = "reliability-fuzzer"
    assert res.exit_code == 0, res.output
    return str(json.loads(res.stdout)["id"])


@pytest.mark.parametrize("name", sorted(ARGV))
def test_command_line_case(name: str, sandbox: Path, figures: Any) -> None:
    case = ARGV[name]
    argv = list(case["argv"])
    if "{request}" in argv:
        argv = [a.replace("{request}", _request(sandbox)) for a in argv]
    check(invoke(argv), case, usage=bool(case.get("usage")))
    assert not (sandbox / "lab-state").exists(), "a catalogue case reached the lab"
    figures.add("catalogue")


def test_the_checker_rejects_a_second_line_and_a_wrong_code(sandbox: Path) -> None:
    # The checker itself must be able to fail: a right message with a wrong exit code, and a
    # message split over two lines, are both refused.
    case = ARGV["drill-run-unknown-scenario"]
    res = invoke(case["argv"])
    with pytest.raises(AssertionError):
        check(res, {**case, "exit": 3})
    with pytest.raises(AssertionError):
        check(res, {**case, "expect": ["unknown scenario 'nope'\n(declared"]})

    class TwoLines:
        exit_code, stdout, output = 2, "", "drkit: a\ndrkit: b\n"
        stderr = output

    with pytest.raises(AssertionError):
        check(TwoLines(), {"exit": 2, "expect": ["a"]})


def test_the_report_section_is_replaced_between_its_markers(tmp_path: Path) -> None:
    # RELIABILITY.md is shared: only the text between the input markers may change.
    from .conftest import END, START, TITLE, write_section

    path = tmp_path / "RELIABILITY.md"
    write_section(path, "first")
    assert path.read_text().startswith(TITLE) and f"{START}\nfirst\n{END}" in path.read_text()
    other = "<!-- kill:start -->\nkill points: 7\n<!-- kill:end -->\n"
    path.write_text(path.read_text() + other)
    write_section(path, "second")
    text = path.read_text()
    assert "first" not in text and f"{START}\nsecond\n{END}" in text and text.endswith(other)
