"""The held run's gate wait (drkit/drill/hold_wait.py), run as the gate play runs it: with
`python -S`, the answer file and the driver's pid (issue 13: one process instead of a shell
forking sleep)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from drkit.drill import phases

WAIT = [sys.executable, "-S", str(phases._HOLD_WAIT)]


def test_prints_the_answer_once_it_is_written(tmp_path: Path) -> None:
    answer = tmp_path / "recovery-go"
    timer = threading.Timer(0.3, answer.write_text, ("go",))
    timer.start()
    try:
        out = subprocess.run([*WAIT, str(answer), str(os.getpid())], capture_output=True,
                             text=True, timeout=30)
    finally:
        timer.cancel()
    assert (out.returncode, out.stdout) == (0, "go")


def test_gives_up_with_nothing_when_the_driver_is_gone(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    out = subprocess.run([*WAIT, str(tmp_path / "never"), gone.stdout.strip()],
                         capture_output=True, text=True, timeout=30)
    assert (out.returncode, out.stdout) == (0, "")


def test_the_gate_play_runs_it_with_this_driver_pid(tmp_path: Path) -> None:
    play = phases._gate_play("failback", tmp_path / "failback-go", None)
    assert str(phases._HOLD_WAIT) in play and f" {os.getpid()}" in play
    assert "sleep" not in play
