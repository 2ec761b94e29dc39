"""The namespaces topology's pure parts (issue 17): names, addresses, settings, inventory
variables, the in-region client's verdict. No lab, no root."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from drkit.config import LabConfig, lab_config, load_plan
from drkit.errors import PlanError
from drkit.lab import netns
from drkit.lab.regionclient import ClientFigures

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cfg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> LabConfig:
    monkeypatch.setenv("DRKIT_LAB_DIR", str(tmp_path / "lab"))
    for var in ("DRKIT_LAB_TOPOLOGY", "DRKIT_LAB_NETNS_CIDR"):
        monkeypatch.delenv(var, raising=False)
    return lab_config(load_plan(REPO / "drkit.yml"))


def test_local_adds_no_hosts(cfg: LabConfig) -> None:
    c = replace(cfg, topology="local")
    assert netns.topology(c) == netns.Topology.LOCAL
    assert netns.extravars(c) == {"drkit_lab_topology": "local"}


def test_auto_is_the_default_and_picks_namespaces_only_where_they_can_be_made(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    plan = load_plan(REPO / "drkit.yml")
    assert plan.model.lab.topology == "auto"
    monkeypatch.setenv("DRKIT_LAB_DIR", str(tmp_path / "lab"))
    monkeypatch.delenv("DRKIT_LAB_TOPOLOGY", raising=False)
    # The machine's answer is asked once per process (drkit.lab.netns.probe): stand it in.
    monkeypatch.setattr(netns, "_PROBED", {"why": "network namespaces need root"})
    c = lab_config(plan)
    assert c.topology == "local"
    assert c.topology_reason == "lab.topology: auto, fell back to local: network namespaces " \
        "need root"
    monkeypatch.setattr(netns, "_PROBED", {"why": None})
    c = lab_config(plan)
    assert c.topology == "namespaces" and "can create namespaces" in c.topology_reason
    # A lab already built keeps its topology whatever the machine says now: `lab up` records it.
    netns.record(replace(c, topology="local", topology_reason="lab.topology: auto, built so"))
    c = lab_config(plan)
    assert (c.topology, c.topology_reason) == ("local", "lab.topology: auto, built so")
    # An explicit setting is obeyed and named.
    monkeypatch.setenv("DRKIT_LAB_TOPOLOGY", "namespaces")
    c = lab_config(plan)
    assert (c.topology, c.topology_reason) == ("namespaces", "DRKIT_LAB_TOPOLOGY: namespaces")


def test_a_lab_built_before_the_record_is_told_by_its_folders(tmp_path: Path) -> None:
    assert netns.built(tmp_path) is None
    (tmp_path / "pg").mkdir()
    assert netns.built(tmp_path)[0] == "local"  # type: ignore[index]
    (tmp_path / "netns").mkdir()
    assert netns.built(tmp_path)[0] == "namespaces"  # type: ignore[index]


def test_free_cidr_avoids_the_ones_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    import random

    first = netns.free_cidr(random.Random(7))
    monkeypatch.setattr(netns, "used_cidrs", lambda: {first})
    again = netns.free_cidr(random.Random(7))
    assert again != first and netns.check_cidr(again) == again


def test_names_and_addresses_come_from_the_lab_id_and_its_cidr(cfg: LabConfig) -> None:
    c = replace(cfg, topology="namespaces", netns_cidr="10.77.5.0/24")
    n = netns.net(c)
    assert n.prefix.startswith("dk") and len(n.prefix) == 10
    assert [m.address for m in n.members] == ["10.77.5.1", "10.77.5.2", "10.77.5.11",
                                              "10.77.5.12"]
    assert n.region("primary").netns == f"{n.prefix}-eu-west-1"
    # Interface names live inside the lab's namespaces and fit Linux's 15 characters.
    assert all(len(m.port) <= 15 for m in n.members)
    other = netns.net(replace(c, state_dir=Path("/tmp/another-lab")))
    assert other.prefix != n.prefix  # a test's lab never meets a developer's
    x = netns.extravars(c)["drkit_lab_net"]
    assert x["hosts"]["secondary"]["address"] == "10.77.5.12"
    assert x["edge_netns"] == f"{n.prefix}-edge"
    assert "StrictHostKeyChecking=yes" in x["ssh_common_args"]
    hv = netns.inventory_vars(c, "primary")
    assert hv["ansible_connection"] == "ssh" and hv["ansible_host"] == "10.77.5.11"
    assert hv["ansible_ssh_executable"].endswith("/netns/bin/ssh")


@pytest.mark.parametrize("value", ["8.8.8.0/24", "10.0.0.0/16", "10.1.2.3/24", "fd00::/64",
                                   "banana"])
def test_only_a_private_ipv4_slash_24_is_accepted(value: str) -> None:
    with pytest.raises(ValueError, match="private IPv4 /24|not a network"):
        netns.check_cidr(value)


def test_bad_topology_and_cidr_in_the_environment_are_plan_errors(
        monkeypatch: pytest.MonkeyPatch) -> None:
    plan = load_plan(REPO / "drkit.yml")
    monkeypatch.setenv("DRKIT_LAB_TOPOLOGY", "vlan")
    with pytest.raises(PlanError, match="DRKIT_LAB_TOPOLOGY='vlan': use auto, local or namespaces"):
        lab_config(plan)
    monkeypatch.setenv("DRKIT_LAB_TOPOLOGY", "namespaces")
    monkeypatch.setenv("DRKIT_LAB_NETNS_CIDR", "8.8.4.0/24")
    with pytest.raises(PlanError, match="DRKIT_LAB_NETNS_CIDR: .*private IPv4 /24"):
        lab_config(plan)
    monkeypatch.setenv("DRKIT_LAB_NETNS_CIDR", "10.9.8.0/24")
    c = lab_config(plan)
    assert c.topology == "namespaces" and c.netns_cidr == "10.9.8.0/24"


def test_a_plan_with_a_public_cidr_is_refused(tmp_path: Path) -> None:
    shipped = (REPO / "drkit.yml").read_text()
    assert "  netns_cidr: 10.213.0.0/24" in shipped
    text = shipped.replace("  netns_cidr: 10.213.0.0/24", "  netns_cidr: 8.8.8.0/24")
    (tmp_path / "drkit.yml").write_text(text)
    with pytest.raises(PlanError, match="netns_cidr"):
        load_plan(tmp_path / "drkit.yml")


def _fig(**kw: object) -> ClientFigures:
    base = dict(client="in-region", acknowledged=5, present=5, missing=(), duplicated=(),
                diverged=(), acked_after_fence=(), ledger_balanced=True, failed_attempts=3)
    base.update(kw)
    return ClientFigures(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [{"missing": ("canary:r:00000004",)},
                                 {"duplicated": ("canary:r:00000001",)},
                                 {"diverged": ("canary:r:00000007",)},
                                 {"acked_after_fence": ("canary:r:00000009",)},
                                 {"ledger_balanced": False}])
def test_the_in_region_client_passes_only_with_nothing_wrong(bad: dict[str, object]) -> None:
    assert _fig().ok
    f = _fig(**bad)
    assert not f.ok
    out = f.to_json()
    assert out["ok"] is False and out["client"] == "in-region"
