"""Every `drkit … --help` must answer in under 0.15 s (issue 19): heavy libraries are imported
when a command runs, not when its help is shown.

Measured side by side with the baseline of a bare `python -c pass` from the same virtualenv,
median of RUNS runs each, alternating, so a noisy neighbour weighs on both alike.
"""

from __future__ import annotations

import sys

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))

from _common import VENV_BIN, machine, median, timed, write_section  # noqa: E402

RUNS = 9
TARGET_S = 0.15
# Every command group, and the leaves people reach for first.
COMMANDS = [[], *([g] for g in ("plan", "lab", "lab-aws", "drill", "evidence", "runbook",
                                "certs", "schedule", "status", "report", "findings")),
            ["drill", "run"], ["evidence", "verify"], ["runbook", "run"], ["lab", "up"]]


def main() -> None:
    drkit, python = str(VENV_BIN / "drkit"), str(VENV_BIN / "python")
    bare: list[float] = []
    times: dict[str, list[float]] = {" ".join(c): [] for c in map(tuple, COMMANDS)}
    for _ in range(RUNS):
        bare.append(timed([python, "-c", "pass"]))
        for c in COMMANDS:
            times[" ".join(c)].append(timed([drkit, *c, "--help"]))
    b = median(bare)
    rows = []
    for name, ts in times.items():
        m = median(ts)
        rows.append(f"| `drkit {name + ' ' if name else ''}--help` | {m:.3f} s | {m / b:.1f}x "
                    f"| {'yes' if m < TARGET_S else 'NO'} |")
    worst = max(median(ts) for ts in times.values())
    body = f"""## CLI start-up (bench/bench_cli.py)

{machine()}; median of {RUNS} runs each, alternating with the baseline.
Target: every `--help` under {TARGET_S} s. Slowest: {worst:.3f} s.

| command | median | vs `python -c pass` ({b:.3f} s) | under {TARGET_S} s |
|---|---|---|---|
""" + "\n".join(rows) + "\n"
    write_section("cli", body)
    print(body)


if __name__ == "__main__":
    main()
