"""The wait of a held run's gate (phases._gate_play), run by Ansible's pipe lookup as
`python -S hold_wait.py ANSWER PID`: once the answer file exists, or the driver PID is gone,
it prints the answer file (nothing if there is none). Standard library only.

It was a loop in sh that forked /bin/sleep every 0.05 s for as long as the run was held
(failback's, through the whole recovery run): about 0.02 CPU-s per second of waiting, paid by
every drill (issue 13). The same checks at the same pace, in one process."""

from __future__ import annotations

import os
import sys
import time

POLL_S = 0.05


def wait(answer: str, pid: int) -> str:
    while not os.path.exists(answer):
        try:
            os.kill(pid, 0)  # as `kill -0`: any error (gone, not ours) ends the wait
        except OSError:
            break
        time.sleep(POLL_S)
    try:
        with open(answer, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


if __name__ == "__main__":
    sys.stdout.write(wait(sys.argv[1], int(sys.argv[2])))
