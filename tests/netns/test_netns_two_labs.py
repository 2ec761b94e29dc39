"""Two namespaced labs on one machine at once (issue 17): a test session's next to a
developer's. Their namespaces, links and sshd are built for real (drkit.lab.netns.ensure, no
services: a few seconds), even on the same /24, and neither sees nor disturbs the other: each
region host answers over SSH from inside its own lab's namespace, a partition of one lab leaves
the other connected, and taking one down leaves the other whole. Needs root.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from drkit.config import LabConfig, lab_config, load_plan
from drkit.lab import netns
from tests.netns.conftest import require_netns

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def two(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LabConfig, LabConfig]]:
    require_netns()
    root = Path(tempfile.mkdtemp(prefix="drkit-netns-two-", dir="/tmp"))
    monkeypatch.setenv("DRKIT_LAB_TOPOLOGY", "namespaces")
    cidr = netns.free_cidr()  # both on the same /24: only their own namespaces hold it
    monkeypatch.setenv("DRKIT_LAB_NETNS_CIDR", cidr)
    plan = load_plan(REPO / "drkit.yml")
    base = lab_config(plan)
    a = replace(base, state_dir=root / "a")
    b = replace(base, state_dir=root / "b")
    try:
        yield a, b
    finally:
        try:
            netns.destroy(a)
        finally:
            netns.destroy(b)
            shutil.rmtree(root, ignore_errors=True)


def _ssh(cfg: LabConfig, role: str) -> subprocess.CompletedProcess[str]:
    n = netns.net(cfg)
    return subprocess.run(
        [str(n.bin_dir / "ssh"), "-i", str(n.client_key), "-o",
         f"UserKnownHostsFile={n.known_hosts}", "-o", "StrictHostKeyChecking=yes", "-o",
         "BatchMode=yes", "-o", "ConnectTimeout=3", f"root@{n.region(role).address}",
         "ip", "netns", "identify"], capture_output=True, text=True, timeout=30)


def test_two_labs_at_once_never_meet(two: tuple[LabConfig, LabConfig]) -> None:
    a, b = two
    na, nb = netns.net(a), netns.net(b)
    assert na.cidr == nb.cidr and not set(na.namespaces) & set(nb.namespaces)
    for cfg in (a, b):
        netns.ensure(cfg, {"DRKIT_LAB_ID": netns.net(cfg).prefix})
    for cfg, n in ((a, na), (b, nb)):
        for role in netns.ROLES:
            out = _ssh(cfg, role)
            # Same address in both labs; each lab's SSH reaches its own region's host (the
            # host key is pinned per lab: a host of the other lab would be refused).
            assert out.returncode == 0 and out.stdout.strip() == n.region(role).netns, out
    netns.partition(a, "primary")
    try:
        assert netns.partitioned(a, "primary") and not netns.partitioned(b, "primary")
        assert _ssh(a, "primary").returncode != 0  # cut off
        assert _ssh(b, "primary").returncode == 0  # the other lab is untouched
    finally:
        netns.heal(a, "primary")
    netns.destroy(a)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [ns for ns in na.namespaces if ns in listed], listed
    assert all(ns in listed for ns in nb.namespaces), listed
    assert _ssh(b, "secondary").returncode == 0
