"""The hand-written catalogue of hostile input (tests/data/catalogue, issue 7).

Each case names its exit code and the parts of the one line it must print; see
tests/data/catalogue/cases.yml. Plans go through `drkit plan validate --plan FILE`, command
lines through the whole app, both in-process (a traceback fails the test).
"""

from __future__ import annotations

import json
import os
import stat
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
    with pytest.MonkeyPatch.context() as mp:
        for key, value in (case.get("env") or {}).items():
            mp.setenv(key, value)
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


# ------------------------------------------------------------------------ issue 16: odd files


def test_a_fifo_given_as_the_plan(tmp_path: Path, figures: Any) -> None:
    # O_NONBLOCK and a stat before any read: a FIFO with no writer must not hang drkit.
    fifo = tmp_path / "drkit.yml"
    os.mkfifo(fifo)
    check(invoke(["plan", "validate", "--plan", str(fifo)]), CASES["generated"]["plan-is-a-fifo"],
          str(fifo))
    figures.add("catalogue")


def test_a_100000_character_plan_path(figures: Any) -> None:
    check(invoke(["plan", "validate", "--plan", "a" * 100_000]),
          CASES["generated"]["plan-path-100k"])
    figures.add("catalogue")


@pytest.mark.parametrize("argv", [
    ["evidence", "verify", "--public-key", "{fifo}"],
    ["evidence", "export", "1", "-o", "{fifo}"],
    ["evidence", "list", "--store", "/tmp/" + "s" * 100_000],
    ["evidence", "show", "1", "--store", "/tmp/" + "s" * 100_000],
], ids=["verify-public-key-fifo", "export-onto-fifo", "list-store-100k", "show-store-100k"])
def test_odd_files_on_the_evidence_commands(argv: list[str], sandbox: Path, tmp_path: Path,
                                            figures: Any) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    argv = [a.replace("{fifo}", str(fifo)) for a in argv]
    res = invoke(argv)
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("drkit: "), res.stderr
    assert any(w in lines[0] for w in ("FIFO", "longer than 4096")), lines[0]
    assert fifo.exists() and stat.S_ISFIFO(fifo.lstat().st_mode), "the FIFO was replaced"
    figures.add("catalogue")


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("name", ["template-in-region.yml", "region-traversal.yml",
                                  "scenario-name-traversal.yml", "duplicate-key.yml",
                                  "webhook-metadata.yml"])
def test_a_hostile_plan_in_a_dry_run_drill_writes_and_runs_nothing(
        name: str, sandbox: Path, figures: Any) -> None:
    # A plan under review must be data: the dry run refuses it before any playbook or file.
    canary = Path("/tmp/drkit-catalogue-pwned")
    canary.unlink(missing_ok=True)
    before = _tree(sandbox)
    plan = CATALOGUE / "plans" / name
    res = invoke(["drill", "run", "region-failover", "--env", "lab", "--dry-run", "--plan",
                  str(plan)])
    check(res, {**CASES["plans"][name], "expect": [str(plan)]}, str(plan))
    assert _tree(sandbox) == before, "a refused dry run wrote into the sandbox"
    assert not canary.exists(), "a plan value ran as a template"
    figures.add("catalogue")


def test_extra_vars_reach_ansible_as_data_never_as_templates(tmp_path: Path,
                                                              figures: Any) -> None:
    # The engine marks every string it passes !unsafe: a value holding {{ lookup('pipe') }}
    # (a plan value, an -e from the command line) is printed as it is, never run.
    from drkit.engine import run_playbook

    canary = tmp_path / "pwned"
    evil = "{{ lookup('ansible.builtin.pipe', 'touch " + str(canary) + "') }}"
    (tmp_path / "pb.yml").write_text(
        "- name: Use extra vars the way drkit's playbooks do\n  hosts: localhost\n"
        "  gather_facts: false\n  tasks:\n"
        "    - name: Print a value, a path built from one, and a number\n"
        "      ansible.builtin.debug:\n"
        "        msg: \"value={{ evil }} dir={{ base }}/x n={{ n + 1 }}\"\n"
        "    - name: Write a value to a file\n"
        "      ansible.builtin.copy: {dest: \"" + str(tmp_path / "out") + "\", "
        "content: \"{{ evil }}\", mode: \"0600\"}\n"
        "      when: flag\n")
    (tmp_path / "inv.yml").write_text(
        "all: {hosts: {localhost: {ansible_connection: local, ansible_python_interpreter: "
        "'{{ ansible_playbook_python }}'}}}\n")
    res = run_playbook(tmp_path / "pb.yml", inventory=tmp_path / "inv.yml",
                       content_root=Path(__file__).resolve().parents[2],
                       extravars={"evil": evil, "base": "/var/lab", "n": 2, "flag": True},
                       artifacts_dir=tmp_path / "art")
    assert res.ok, res.failure
    assert not canary.exists(), "an extra var was templated"
    assert (tmp_path / "out").read_text() == evil
    assert "dir=/var/lab/x n=3" in (tmp_path / "art" / "stdout").read_text()
    figures.add("catalogue")


def test_no_log_is_never_a_variable_in_shipped_content() -> None:
    # `-e drkit_no_log=false` turned off no_log in the certificate rotation (issue 16): tasks
    # that handle secrets say `no_log: true`, literally.
    root = Path(__file__).resolve().parents[2]
    found = []
    for path in [*root.glob("runbooks/**/*.yml"), *root.glob("playbooks/**/*.yml")]:
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "no_log:" in line and line.split("no_log:", 1)[1].strip() != "true":
                found.append(f"{path.relative_to(root)}:{i}: {line.strip()}")
    assert not found, found


def test_a_key_the_plan_names_is_read_as_a_bounded_regular_file(sandbox: Path, tmp_path: Path,
                                                                figures: Any) -> None:
    # Not only --public-key: a plan's evidence.public_key that is a FIFO or /dev/zero gets one
    # line too (read with O_NONBLOCK and a bound; it once hung or read without end).
    for target in ("fifo", "/dev/zero"):
        if target == "fifo":
            target = str(tmp_path / "key.pub")
            os.mkfifo(target)
        plan = tmp_path / "drkit.yml"
        text = (sandbox / "drkit.yml").read_text(encoding="utf-8")
        data = yaml.safe_load(text)
        data.setdefault("evidence", {})["public_key"] = target
        data["evidence"]["store"] = str(sandbox / "evidence")
        for env in data["environments"].values():
            env["inventory"] = str(sandbox / env["inventory"])
        for sc in data["scenarios"].values():
            for ph in sc["phases"]:
                ph["playbook"] = str(sandbox / ph["playbook"])
            for k in ("rollback", "holds"):
                if sc.get(k):
                    sc[k] = str(sandbox / sc[k])
        plan.write_text(yaml.safe_dump(data), encoding="utf-8")
        res = invoke(["evidence", "verify", "--plan", str(plan)])
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
        lines = res.stderr.splitlines()
        assert len(lines) == 1 and ("FIFO" in lines[0] or "under /dev" in lines[0]), lines
    figures.add("catalogue")


def test_under_keeps_a_name_under_its_parent(tmp_path: Path) -> None:
    from drkit.errors import BadInput
    from drkit.files import under

    assert under(tmp_path, "eu-west-1", "data") == tmp_path / "eu-west-1" / "data"
    for bad in ("..", "../x", "/etc", "a/b", "", ".", "x\x00"):
        with pytest.raises(BadInput, match="would leave"):
            under(tmp_path, bad)
