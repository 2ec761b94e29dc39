"""Fixtures for the remote-execution tests (issue 18): a real moto server (the evidence tests'
fixture) holding the shared state's bucket, in a region no drill fails over."""

from __future__ import annotations

import uuid

import pytest

from tests.evidence.test_evidence_s3 import moto_url  # noqa: F401  (the same real moto server)

STATE_REGION = "eu-north-1"


@pytest.fixture
def state_bucket(moto_url, monkeypatch):  # noqa: F811
    """A fresh bucket per test; AWS settings pointing at moto."""
    for k, v in {"AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing",
                 "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": STATE_REGION}.items():
        monkeypatch.setenv(k, v)
    import boto3

    name = f"drkit-state-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=moto_url, region_name=STATE_REGION).create_bucket(
        Bucket=name, CreateBucketConfiguration={"LocationConstraint": STATE_REGION})
    return f"s3://{name}/drills"


# ------------------------------------------------------------------ execution nodes


class Nodes:
    """A namespaced topology without the lab's services: the region namespaces and their sshd
    (drkit.lab.netns.ensure, the code `lab up` runs). The secondary region's sshd is the
    execution node; it is this machine, so the node's drkit is this venv, at the same path."""

    def __init__(self, cfg) -> None:
        from drkit.lab import netns

        self.cfg = cfg
        self.net = netns.net(cfg)

    def node_config(self, role: str = "secondary") -> dict:
        import sys

        n = self.net
        return {"host": n.region(role).address, "user": "root",
                "identity_file": str(n.client_key), "ssh_executable": str(n.bin_dir / "ssh"),
                "ssh_options": [f"UserKnownHostsFile={n.known_hosts}",
                                "StrictHostKeyChecking=yes"],
                "python": sys.executable, "state_dir": str(self.cfg.state_dir / f"node-{role}")}

    def node(self, role: str = "secondary"):
        from drkit.config import ExecutionNode
        from drkit.remote import from_config

        region = self.net.region(role).region
        return from_config(region, ExecutionNode(**self.node_config(role)))

    def netns_inode(self, role: str) -> str:
        """The network namespace of the region (what /proc/<pid>/ns/net of its sshd reads)."""
        import os

        from drkit.lab.netns import _read_pid

        pid = _read_pid(self.net.sshd_pidfile(role))
        assert pid is not None, f"no sshd in the {role} region"
        return os.readlink(f"/proc/{pid}/ns/net")


@pytest.fixture(scope="package")
def nodes(tmp_path_factory):
    """One namespaced topology for every test of tests/remote that needs nodes (it was one per
    module: three set-ups and teardowns in a CI session); the tests only read it."""
    import dataclasses

    from drkit.config import lab_config, load_plan
    from drkit.lab import netns

    why = netns.available()
    if why:  # the namespaced lab is part of this machine's setup (scripts/install): fail loudly
        pytest.fail(f"execution-node tests need the namespaces topology: {why}")
    root = tmp_path_factory.mktemp("nodes")
    (root / "inv.ini").write_text("localhost ansible_connection=local\n")
    (root / "drkit.yml").write_text(
        "version: 1\nregions: {primary: eu-west-1, secondary: eu-central-1}\n"
        "environments: {lab: {inventory: inv.ini, lab: true}}\n"
        "services: {payments: {tier: 1, rto: 5m, rpo: 0s}}\n"
        "scenarios: {s: {services: [payments], phases: [{name: a, playbook: inv.ini, "
        "starts_clock: true, stops_clock: true}]}}\n")
    cfg = dataclasses.replace(lab_config(load_plan(root / "drkit.yml")),
                              state_dir=(root / "lab").resolve(), topology="namespaces",
                              netns_cidr=netns.free_cidr())
    cfg.state_dir.mkdir()
    try:
        netns.ensure(cfg, {})
        yield Nodes(cfg)
    finally:
        netns.destroy(cfg)
        assert netns.leftovers(cfg) == []
