"""RELIABILITY.md from the reliability suite's figures (issue 7; issue 13: tests write nothing
tracked).

The suite never writes RELIABILITY.md. Each of its three parts saves its figures, when every
test of that part ran and passed in one session, as `<part>.json` in the figures directory
($DRKIT_RELIABILITY_FIGURES, default `.pytest_cache/drkit-reliability/`, untracked):

    input   tests/reliability/test_fuzz.py, test_catalogue.py, test_hostile_evidence.py,
            test_secrets.py: hostile plans, arguments and evidence, and leaked secrets
    kill    test_drill_survival.py::test_kill_*: a kill at every phase of a drill
    load    test_drill_survival.py::test_load_*: drills back to back under load

A person then writes RELIABILITY.md from them with `bench/reliability.py` (which can also run
the parts first); each part rewrites only its own section, between its markers.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
REPORT = REPO / "RELIABILITY.md"
PARTS = ("input", "kill", "load")
START, END = "<!-- input:start -->", "<!-- input:end -->"

TITLE = """# drkit reliability

A DR tool must never become the incident. The reliability suite (`tests/reliability/`,
issue 7) kills drkit at every phase of a drill, feeds it hostile plans, arguments and evidence,
runs drills back to back under load, and hunts for leaked secrets. Each section below comes
from the last run in which that whole part of the suite passed, written by
`bench/reliability.py` (the tests themselves write nothing tracked).
"""


def figures_dir() -> Path:
    """Where a test session saves its parts' figures: $DRKIT_RELIABILITY_FIGURES, or a folder
    in pytest's own (untracked) cache."""
    env = os.environ.get("DRKIT_RELIABILITY_FIGURES")
    return Path(env) if env else REPO / ".pytest_cache" / "drkit-reliability"


def save(directory: Path, part: str, figures: Mapping[str, Any], *, finished: str,
         tests: int) -> Path:
    """Write one part's figures as `<part>.json` (atomically: a reader never sees half)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{part}.json"
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"part": part, "finished": finished, "tests": tests,
                               "figures": dict(figures)}, indent=2, sort_keys=True) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)
    return path


def load(directory: Path) -> dict[str, dict[str, Any]]:
    """The saved parts found in `directory`: {part: {"finished", "tests", "figures"}}."""
    found = {}
    for part in PARTS:
        path = directory / f"{part}.json"
        if path.is_file():
            found[part] = json.loads(path.read_text(encoding="utf-8"))
    return found


def render_input(c: Mapping[str, int], when: str) -> str:
    def n(key: str) -> int:
        return int(c.get(key, 0))

    rows = [
        ("fuzz cases tried (hypothesis, derandomized)", n("fuzz_plan") + n("fuzz_argv")),
        ("- plan files: random YAML, mutated plans, random bytes", n("fuzz_plan")),
        ("- CLI arguments: every command, unknown options, bad durations, dates and names",
         n("fuzz_argv")),
        ("fuzz cases ending in a traceback, or not in exit 0/2 with its one line", 0),
        ("hand-written catalogue cases passed (exact exit code and expected line)",
         n("catalogue")),
        ("hostile evidence stores through verify/list/show/export (each reported, none crashed)",
         n("hostile_store")),
        ("hostile artifact names and store keys refused", n("hostile_names")),
        ("symlinks planted mid-run to redirect writes (each refused)", n("hostile_symlinks")),
        ("files written outside an evidence store", 0),
        ("canary secrets planted (env, extra vars, summary, artifacts, messages, no_log)",
         n("canaries")),
        ("files searched (store, run artifacts, HTML/MD/JSON/JUnit, terminal output)",
         n("files_searched")),
        ("canary secrets leaked", 0),
    ]
    table = "\n".join(f"| {what} | {k} |" for what, k in rows)
    return f"""## Hostile input, hostile evidence, secrets

From the last run of the input part of the suite ({when}): `tests/reliability/`
`test_fuzz.py`, `test_catalogue.py`, `test_hostile_evidence.py` and `test_secrets.py`, every
test passed.

| what | figure |
| --- | --- |
{table}
"""


def render_kill(f: Mapping[str, Any], when: str) -> str:
    tried: list[str] = list(f["tried"])
    drkit_kills = sum(1 for t in tried if t.endswith("(drkit)"))
    return f"""## A kill at every phase (tests/reliability/test_drill_survival.py)

From the last run of the kill part ({when}), each kill point a test case of its own.
Kill points tried and recovered with `drkit drill recover`: {len(tried)} of {len(tried)}
({drkit_kills} phases with drkit SIGKILLed, {len(tried) - drkit_kills} with the ansible-playbook
under it SIGKILLed): {", ".join(tried)}.

After each: payments served from the original primary with replication streaming, and the
evidence chain verified. In the end the chain verified with {f["interrupted"]} runs recorded as
interrupted, and the next drill passed (RTO {float(f["rto_s"]):.2f} s).
"""


def render_load(f: Mapping[str, Any], when: str) -> str:
    rtos = sorted(float(r) for r in f["rtos"])
    p95 = rtos[min(len(rtos) - 1, int(round(0.95 * (len(rtos) - 1))))]
    return f"""## Sustained drills under load (tests/reliability/test_drill_survival.py)

From the last run of the load part ({when}): {len(rtos)} drills back to back on the lab, each a
test case of its own, all passed, under a steady {f["rate_per_s"]} payments per second
through the entry point ({f["load_ok"]} load requests answered, {f["load_failed"]} failed while
the primary region was down or switching). The ledger balanced after each drill.

Acknowledged canary payments lost with synchronous replication: {f["lost"]} (of {f["acked"]}).

| RTO | min | median | p95 | max |
|---|---|---|---|---|
| seconds | {rtos[0]:.2f} | {statistics.median(rtos):.2f} | {p95:.2f} | {rtos[-1]:.2f} |
"""


RENDER = {"input": render_input, "kill": render_kill, "load": render_load}


def write_section(path: Path, body: str, name: str = "input") -> None:
    """Replace the text between the `name` markers (create the file, or the markers, first).
    Each part of the suite owns one section: input, kill and load."""
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


def write_report(saved: Mapping[str, Mapping[str, Any]], path: Path = REPORT) -> list[str]:
    """Rewrite the sections of the parts in `saved` (see load()); returns the parts written."""
    if saved and path.exists():  # the title says where the sections come from: keep it current
        text = path.read_text(encoding="utf-8")
        head, marker, rest = text.partition("<!-- ")
        if marker and head.rstrip() != TITLE.rstrip():
            path.write_text(TITLE + "\n" + marker + rest, encoding="utf-8")
    written = []
    for part in PARTS:
        if part in saved:
            entry = saved[part]
            write_section(path, RENDER[part](entry["figures"], entry["finished"]), name=part)
            written.append(part)
    return written
