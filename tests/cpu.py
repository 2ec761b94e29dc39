"""CPU a test session spends, itself and every process it starts (issue 13: CI time).

The whole suite keeps both cores busy, so its wall time on CI is about its CPU time over two
cores, and what makes CI faster is less CPU, not another split. A test's own CPU is not enough:
most of it is spent in the processes the test starts (ansible-playbook, its workers and
modules, Terraform, the lab's services, moto), some of them detached. So the session moves
itself into a cgroup of its own (as root, where the cpuacct controller is mounted: cgroup v1,
as on this machine, or v2), which every process it starts inherits, and reads the group's CPU
counter before and after each test. Elsewhere it measures nothing and says so.
"""

from __future__ import annotations

import os
from pathlib import Path

V1 = Path("/sys/fs/cgroup/cpuacct")
V2 = Path("/sys/fs/cgroup/unified")


class SessionCpu:
    """The session's cgroup: `used()` is the CPU seconds of every process in it so far."""

    def __init__(self, group: Path, procs: str, counter: str) -> None:
        self.group, self._procs, self._counter = group, procs, counter

    @classmethod
    def join(cls) -> SessionCpu | None:
        """Move this process into a new group; None where that cannot be done (not root, no
        controller): then there is no CPU figure rather than a wrong one."""
        if os.geteuid() != 0:
            return None
        for root, procs, counter in ((V1, "tasks", "cpuacct.usage"),
                                     (V2, "cgroup.procs", "cpu.stat")):
            group = root / f"drkit-test-{os.getpid()}"
            try:
                group.mkdir(exist_ok=True)
                (group / procs).write_text(str(os.getpid()))
                found = cls(group, procs, counter)
                found.used()
                return found
            except OSError:
                try:
                    group.rmdir()
                except OSError:
                    pass
        return None

    def used(self) -> float:
        text = (self.group / self._counter).read_text()
        if self._counter == "cpuacct.usage":
            return int(text) / 1e9
        usec = next(line.split()[1] for line in text.splitlines() if line.startswith("usage_usec"))
        return int(usec) / 1e6

    def leave(self) -> None:
        """Back to the parent group, and remove ours once nothing is left in it (a process the
        session failed to stop keeps it: then it stays, named after the session's pid)."""
        try:
            (self.group.parent / self._procs).write_text(str(os.getpid()))
            self.group.rmdir()
        except OSError:
            pass
