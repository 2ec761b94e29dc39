"""Write RELIABILITY.md from the reliability suite's figures (the tests never write it).

Each part of the suite (input, kill, load: tests/reliability/report.py) saves its figures when
every one of its tests ran and passed in one pytest session. This script runs the parts you ask
for in a fresh pytest session and rewrites their sections of RELIABILITY.md, or, with --from,
takes the figures an earlier session saved (e.g. the whole suite's run by `./scripts/test`,
which saves them in .pytest_cache/drkit-reliability/).

    .venv/bin/python bench/reliability.py                 # run all three parts (~10 minutes)
    .venv/bin/python bench/reliability.py kill load       # only these parts
    .venv/bin/python bench/reliability.py --from .pytest_cache/drkit-reliability

A part that did not pass completely is not written, and the script exits 1 naming it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.reliability import report  # noqa: E402

SURVIVAL = "tests/reliability/test_drill_survival.py"
# The pytest node ids that make up each part.
NODES = {
    "input": [f"tests/reliability/{m}.py" for m in
              ("test_fuzz", "test_catalogue", "test_hostile_evidence", "test_secrets")],
    "kill": [f"{SURVIVAL}::test_kill_point_is_recovered",
             f"{SURVIVAL}::test_kill_points_leave_a_verified_chain_and_a_passing_drill"],
    "load": [f"{SURVIVAL}::test_load_drill_passes",
             f"{SURVIVAL}::test_load_left_a_balanced_ledger_and_lost_nothing"],
}


def run_parts(parts: list[str], figures: Path) -> int:
    nodes = [n for part in parts for n in NODES[part]]
    env = {**os.environ, "DRKIT_RELIABILITY_FIGURES": str(figures)}
    cmd = [str(ROOT / ".venv" / "bin" / "python"), "-m", "pytest", "-p", "no:cacheprovider",
           "-q", *nodes]
    print("reliability:", " ".join(cmd[1:]), flush=True)
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("parts", nargs="*", metavar="PART",
                    help=f"parts to run and write: {', '.join(report.PARTS)} (default: all)")
    ap.add_argument("--from", dest="source", type=Path,
                    help="write from the figures an earlier pytest session saved in this folder")
    ap.add_argument("--output", type=Path, default=report.REPORT, help=argparse.SUPPRESS)
    args = ap.parse_args()
    parts = list(dict.fromkeys(args.parts)) or list(report.PARTS)
    if unknown := [p for p in parts if p not in report.PARTS]:
        ap.error(f"unknown part {unknown[0]!r} (use {', '.join(report.PARTS)})")

    if args.source is not None:
        saved = report.load(args.source)
    else:
        with tempfile.TemporaryDirectory(prefix="drkit-reliability-") as tmp:
            run_parts(parts, Path(tmp))
            saved = report.load(Path(tmp))
    saved = {part: entry for part, entry in saved.items() if part in parts}
    written = report.write_report(saved, args.output)
    missing = [part for part in parts if part not in written]
    if written:
        print(f"reliability: wrote {', '.join(written)} into {args.output}")
    if missing:
        print(f"reliability: no figures for {', '.join(missing)}: that part did not run "
              "completely or did not pass; its section is left as it was", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
