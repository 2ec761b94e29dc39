"""RELIABILITY.md is written from saved figures by bench/reliability.py, never by a test run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import part_of
from .report import END, START, TITLE, load, save, write_report

REPO = Path(__file__).resolve().parents[2]

KILL = {"tried": ["preflight (drkit)", "inject-fault (drkit)", "inject-fault (ansible)"],
        "interrupted": 2, "rto_s": 3.456}
LOAD = {"rtos": [3.5, 3.1, 4.0, 3.3], "lost": 0, "acked": 412, "rate_per_s": 20,
        "load_ok": 900, "load_failed": 12}
INPUT = {"fuzz_plan": 10, "fuzz_argv": 5, "catalogue": 7, "canaries": 8}


def test_each_part_has_its_tests() -> None:
    survival = "tests/reliability/test_drill_survival.py"
    assert part_of(f"{survival}::test_kill_point_is_recovered[smoke-drkit]") == "kill"
    assert part_of(f"{survival}::test_kill_points_leave_a_verified_chain_and_a_passing_drill") \
        == "kill"
    assert part_of(f"{survival}::test_load_drill_passes[drill-03]") == "load"
    assert part_of("tests/reliability/test_fuzz.py::test_random_yaml_text") == "input"
    assert part_of("tests/reliability/test_report.py::test_each_part_has_its_tests") is None


def test_saved_figures_become_the_sections(tmp_path: Path) -> None:
    figures = tmp_path / "figures"
    for part, data in (("kill", KILL), ("load", LOAD), ("input", INPUT)):
        save(figures, part, data, finished="2026-11-30 10:00 UTC", tests=3)
    report = tmp_path / "RELIABILITY.md"
    report.write_text("# old title\n\nold words\n\n<!-- kill:start -->\nold\n<!-- kill:end -->\n")
    assert write_report(load(figures), report) == ["input", "kill", "load"]
    text = report.read_text()
    assert text.startswith(TITLE) and "old words" not in text and "\nold\n" not in text
    assert f"{START}\n## Hostile input" in text and END in text
    assert "| fuzz cases tried (hypothesis, derandomized) | 15 |" in text
    assert "3 of 3" in text and "2 phases with drkit SIGKILLed, 1 with" in text
    assert "2 runs recorded as\ninterrupted" in text and "RTO 3.46 s" in text
    assert "| seconds | 3.10 | 3.40 | 4.00 | 4.00 |" in text and "0 (of 412)" in text
    # A part without figures leaves its section alone.
    (figures / "load.json").unlink()
    report.write_text(text.replace("0 (of 412)", "kept"))
    assert write_report(load(figures), report) == ["input", "kill"]
    assert "kept" in report.read_text()


def test_the_script_writes_from_an_earlier_session(tmp_path: Path) -> None:
    figures = tmp_path / "figures"
    save(figures, "kill", KILL, finished="2026-11-30 10:00 UTC", tests=14)
    out = tmp_path / "R.md"
    tracked = (REPO / "RELIABILITY.md").read_bytes()
    res = subprocess.run([sys.executable, str(REPO / "bench" / "reliability.py"), "kill",
                          "--from", str(figures), "--output", str(out)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "## A kill at every phase" in out.read_text()
    res = subprocess.run([sys.executable, str(REPO / "bench" / "reliability.py"), "load",
                          "--from", str(figures), "--output", str(out)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "no figures for load" in res.stderr
    assert (REPO / "RELIABILITY.md").read_bytes() == tracked
