"""`drkit --help` must answer in under 0.3 s: heavy libraries are imported lazily.

Measured side by side with the baseline of a bare `python -c pass` from the same virtualenv,
median of 15 runs each.
"""

from __future__ import annotations

import sys

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))

from _common import VENV_BIN, machine, median, timed, write_section  # noqa: E402

RUNS = 15


def main() -> None:
    drkit, python = str(VENV_BIN / "drkit"), str(VENV_BIN / "python")
    helps, bare, subhelp = [], [], []
    for _ in range(RUNS):
        bare.append(timed([python, "-c", "pass"]))
        helps.append(timed([drkit, "--help"]))
        subhelp.append(timed([drkit, "drill", "--help"]))
    h, b, s = median(helps), median(bare), median(subhelp)
    body = f"""## CLI start-up (bench/bench_cli.py)

{machine()}; median of {RUNS} runs each, side by side.

| command | median | target |
|---|---|---|
| `python -c pass` (baseline) | {b:.3f} s | |
| `drkit --help` | {h:.3f} s ({h / b:.1f}x baseline) | <= 0.3 s |
| `drkit drill --help` | {s:.3f} s ({s / b:.1f}x baseline) | |
"""
    write_section("cli", body)
    print(body)


if __name__ == "__main__":
    main()
