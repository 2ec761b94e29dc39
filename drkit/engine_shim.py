"""The `ansible-playbook` that drkit's engine puts first on a run's PATH: Ansible dies with drkit.

ansible-playbook must not outlive drkit: a drill killed with SIGKILL would otherwise go on
failing over with nobody watching, and race `drkit drill recover`. ansible-runner starts it
through pexpect, which resolves the name on the run's PATH, so this shim, first on that PATH,
starts the real one as its child and asks the kernel for a signal when drkit dies
(PR_SET_PDEATHSIG). It then kills every process below it, with their process groups: Ansible's
workers leave the group with setsid() (ansible-core 2.19), so the shim is also their subreaper
(PR_SET_CHILD_SUBREAPER) and finds them even when ansible-playbook died first. A cancel from
ansible-runner does the same (the engine sends SIGTERM), so a cancelled phase stops at once
rather than finishing its task behind the rollback.

The engine copies this file into the run's private `bin/ansible-playbook` behind a
`#!<drkit's python> -S` line (no site import: it starts fast, and tests tell it from the real
ansible-playbook by that ` -S `). So it is a script, not a module: standard library only, nothing
from drkit, and nothing runs on import. The real ansible-playbook is the one next to the
interpreter that runs it, which is drkit's own (the engine writes that interpreter in the
shebang).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

# Not `typing.TYPE_CHECKING`: importing typing would add tens of milliseconds to every playbook
# start, and the shim runs on the recovery clock. mypy treats this name as true all the same.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import FrameType
    from typing import NoReturn

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
# The exit status of a process killed by SIGKILL, as a shell reports it.
ORPHANED = 137


def real_playbook() -> str:
    """The real ansible-playbook: beside the interpreter running this shim (drkit's)."""
    return os.path.join(os.path.dirname(sys.executable), "ansible-playbook")


def below(root: int) -> list[int]:
    """Every process below `root` (children, grandchildren, ...), from /proc."""
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/" + name + "/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(name))
    found: list[int] = []
    todo = [root]
    while todo:
        for pid in kids.get(todo.pop(), []):
            found.append(pid)
            todo.append(pid)
    return found


def stop(_sig: int, _frame: FrameType | None) -> None:
    """SIGKILL everything below the shim, their process groups, then the shim's own group."""
    me = os.getpgrp()
    for pid in below(os.getpid()):
        try:
            group = os.getpgid(pid)
            if group != me:
                os.killpg(group, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    os.killpg(me, signal.SIGKILL)


def main(argv: list[str]) -> NoReturn:
    libc = ctypes.CDLL(None)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGUSR1)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1)
    if os.getppid() != int(os.environ.get("DRKIT_PARENT_PID", os.getppid())):
        sys.exit(ORPHANED)  # drkit died before the lines above: do not run orphaned
    real = real_playbook()
    child = os.fork()
    if child == 0:
        os.execv(real, [real, *argv[1:]])
    for sig in (signal.SIGUSR1, signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)  # reap the workers we adopted, too
        except InterruptedError:
            continue
        except ChildProcessError:
            sys.exit(1)
        if pid == child:
            break
    code = os.waitstatus_to_exitcode(status)
    sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main(sys.argv)
