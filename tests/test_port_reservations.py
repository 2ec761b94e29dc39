"""Lab port ranges are reserved across pytest sessions (tests/conftest.py free_port_base):
scripts/test starts sessions side by side, and two that looked for free ports together got
overlapping ranges before either lab bound them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests import conftest

REPO = Path(__file__).resolve().parents[1]


def test_a_reserved_range_is_not_given_twice(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(conftest, "PORT_RESERVATIONS", tmp_path)
    base = conftest.free_port_base(span=50)
    try:
        # Every range that overlaps it is refused, even by this process (one flock per open).
        assert not conftest._reserve(base + 20, 50)
        assert not conftest._reserve(base - 40, 50)
        assert conftest._reserve(base + 50, 10)
        conftest._reserved.pop().close()
    finally:
        conftest._reserved.pop().close()
    assert conftest._reserve(base, 50)  # given back: free again
    conftest._reserved.pop().close()


def test_sessions_starting_together_get_disjoint_ranges(tmp_path: Path) -> None:
    """Two processes each take 25 ranges of 50 ports at the same moment and hold them: no
    port is in two ranges."""
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from tests import conftest
        conftest.PORT_RESERVATIONS = Path({str(tmp_path)!r})
        sys.stdin.readline()  # start together
        bases = [conftest.free_port_base(span=50) for _ in range(25)]
        print(" ".join(map(str, bases)), flush=True)
        sys.stdin.readline()  # hold them until both have printed
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    ports: list[set[int]] = []
    for p in procs:
        assert p.stdout is not None
        bases = [int(b) for b in p.stdout.readline().split()]
        assert len(bases) == 25
        ports.append({port for b in bases for port in range(b, b + 50)})
    for p in procs:
        assert p.stdin is not None
        p.stdin.close()
        assert p.wait(timeout=60) == 0
    assert len(ports[0]) == len(ports[1]) == 25 * 50  # within a session, disjoint too
    assert not ports[0] & ports[1]
