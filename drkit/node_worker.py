"""The node's end of a streamed run (issue 18): `ansible-runner worker` that dies with its stream.

`ssh node python -m drkit.node_worker` starts `python -m ansible_runner worker` as its child and
relays the controller's stream to it. The controller keeps the stream's stdin open until the
run ends, so end-of-file on stdin while the worker still runs means the controller cancelled
the run (the drill's SIGTERM, a refused gate) or is gone: this process then kills everything
below it, ansible-playbook and Ansible's setsid() workers included (it is their subreaper, as
drkit/engine_shim.py is locally), instead of letting the task go on changing the environment
with nobody watching. It imports no ansible_runner (only drkit/engine.py does): it runs it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading

from drkit.engine_shim import below

PR_SET_CHILD_SUBREAPER = 36


def _kill_all() -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in below(os.getpid()):
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        if sig == signal.SIGTERM:
            threading.Event().wait(1.0)


def main() -> int:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    child = subprocess.Popen([sys.executable, "-m", "ansible_runner", "worker"],
                             stdin=subprocess.PIPE, stdout=None, stderr=None)
    assert child.stdin is not None

    def ended() -> None:
        # The worker is done (or crashed without its eof line): end our stdout too, so the
        # controller's processor sees the end of the stream rather than wait for it.
        child.wait()
        os.close(1)

    threading.Thread(target=ended, daemon=True).start()
    fed = True
    while True:
        chunk = os.read(0, 65536)
        if not chunk:
            break
        if fed:
            try:
                child.stdin.write(chunk)
                child.stdin.flush()
            except OSError:
                fed = False  # the worker read its job and stopped reading: keep watching
    if child.poll() is None:
        _kill_all()  # the controller went away before the run ended
    rc = child.wait()
    _kill_all()  # nothing the run started outlives it
    return rc


if __name__ == "__main__":
    sys.exit(main())
