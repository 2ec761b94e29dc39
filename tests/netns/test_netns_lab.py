"""The lab's namespaces topology on the real machine (issue 17): regions as network
namespaces with hosts over SSH, a partition fault, fencing before promotion, split-brain caught
by the in-region client's and the canary's reconciliation, and `lab down` leaving nothing.

One namespaced lab for this module (its own state dir, ports, /24 and namespace names, so it
never meets the session's lab or a developer's), one fenced partition drill, one drill without
fencing, then `lab down`. Needs root (network namespaces) and openssh-server (scripts/install).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port_base
from tests.drills import DRKIT, make_plan
from tests.netns.conftest import require_netns

pytestmark = [pytest.mark.lab]

REPO = Path(__file__).resolve().parents[2]
PARTITION = "playbooks/scenarios/region-partition"


def _partition_scenarios(data: dict[str, Any]) -> None:
    """The shipped plan's region-partition (fenced) and region-partition-unfenced, as they are
    (drkit.yml; docs/topology.md), with a patient RTO target."""
    for name in ("region-partition", "region-partition-unfenced"):
        phases = [p["name"] for p in data["scenarios"][name]["phases"]]
        assert phases[:3] == ["preflight", "region-client", "inject-fault"], phases
        assert ("fence" in phases) == (name == "region-partition"), phases
        assert data["scenarios"][name]["rollback"] == f"{PARTITION}/rollback-partition.yml"
    # A 2-core box shared with other test sessions: the verdict must not hinge on speed here
    # (timings go to bench/; RTO is judged by the drill tests of the local topology).
    data["services"]["payments"]["rto"] = "600s"


class NsLab:
    def __init__(self, plan: Path, state_dir: Path) -> None:
        self.plan_path, self.state_dir = plan, state_dir

    @property
    def plan(self) -> Any:
        from drkit.config import load_plan

        return load_plan(self.plan_path)

    @property
    def cfg(self) -> Any:
        from drkit.config import lab_config

        return lab_config(self.plan)

    @property
    def net(self) -> Any:
        from drkit.lab import netns

        return netns.net(self.cfg)

    def drill(self, scenario: str) -> tuple[int, dict[str, Any], str]:
        import json

        proc = subprocess.run([DRKIT, "drill", "run", scenario, "--env", "lab", "--json",
                               "--plan", str(self.plan_path)], capture_output=True, text=True,
                              timeout=900)
        try:
            return proc.returncode, json.loads(proc.stdout), proc.stderr
        except ValueError:
            raise AssertionError(f"no JSON (rc {proc.returncode}): {proc.stdout[-2000:]}\n"
                                 f"{proc.stderr[-3000:]}") from None

    def ssh(self, role: str, *command: str) -> subprocess.CompletedProcess[str]:
        n = self.net
        return subprocess.run(
            [str(n.bin_dir / "ssh"), "-i", str(n.client_key), "-o",
             f"UserKnownHostsFile={n.known_hosts}", "-o", "StrictHostKeyChecking=yes", "-o",
             "BatchMode=yes", "-o", "ConnectTimeout=5", f"root@{n.region(role).address}",
             *command], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def nslab() -> Iterator[NsLab]:
    from drkit import lab
    from drkit.lab import netns

    require_netns()
    root = Path(tempfile.mkdtemp(prefix="drkit-netns-test-", dir="/tmp"))
    os.chmod(root, 0o755)  # PostgreSQL runs as `postgres` and must traverse it
    (root / "plan").mkdir()
    plan = make_plan(root / "plan", _partition_scenarios)
    # Its own state dir (so its own namespace names: the prefix is a hash of it), ports and a
    # /24 no other namespace on this machine uses (a developer's lab may run next to it).
    env = {"DRKIT_LAB_DIR": str(root / "state"), "DRKIT_LAB_PORT_BASE": str(free_port_base()),
           "DRKIT_LAB_INSTANCES": "2", "DRKIT_LAB_TOPOLOGY": "namespaces",
           "DRKIT_LAB_NETNS_CIDR": netns.free_cidr(), "DRKIT_PLAN": str(plan)}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        handle = NsLab(plan, root / "state")
        cfg = handle.cfg  # kept: the clean-up must not depend on the plan loading later
        try:
            lab.up(handle.plan)
            yield handle
        finally:
            try:
                lab.down(handle.plan)
            finally:
                # Whatever `lab down` could not do (a failed run, a plan that no longer loads
                # because its playbooks moved): no namespace or lab process is left behind.
                netns.destroy(cfg)
                for pid in lab.marked_pids(cfg):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                shutil.rmtree(root, ignore_errors=True)


def _ns_of(pid: int | None) -> str:
    assert pid is not None
    return subprocess.run(["ip", "netns", "identify", str(pid)], capture_output=True,
                          text=True, check=True).stdout.strip()


def test_regions_live_in_their_namespaces_and_are_reached_over_ssh(nslab: NsLab) -> None:
    from drkit import lab

    st = lab.status(nslab.plan)
    assert st.up, [(c.name, c.detail) for c in st.components if not c.healthy]
    assert st.topology == "namespaces"
    n = nslab.net
    by_name = {c.name: c for c in st.components}
    for role, region in (("primary", nslab.cfg.primary_region),
                         ("secondary", nslab.cfg.secondary_region)):
        ns = n.region(role).netns
        assert _ns_of(by_name[f"postgres-{region}"].pid) == ns
        for i in (1, 2):
            assert _ns_of(by_name[f"payments-{region}-{i}"].pid) == ns
        assert _ns_of(by_name[f"sshd-{region}"].pid) == ns
        # A host of the inventory, over SSH with the lab's key and pinned host key.
        out = nslab.ssh(role, "ip", "netns", "identify")
        assert out.returncode == 0 and out.stdout.strip() == ns, out.stderr
        # Its sessions' bash is no top-level shell (SHLVL=1 from sshd; it would be 0 here), so
        # it reads no ~/.bashrc: not this machine's user set-up per command (issue 19).
        out = nslab.ssh(role, "printenv", "SHLVL")
        assert out.stdout.strip() == "1", (out.stdout, out.stderr)
    # The entry point is this machine's loopback; its backends are reached from the edge.
    assert _ns_of(by_name["haproxy"].pid) == ""
    cfgtext = (nslab.state_dir / "haproxy" / "haproxy.cfg").read_text()
    assert f"namespace {n.edge.netns}" in cfgtext
    # Replication crosses the lab's links (a partition must cut it), not a unix socket.
    import psycopg

    with psycopg.connect(host=str(nslab.state_dir / "pg" / "run"),
                         port=nslab.cfg.ports["pg_primary"], user="postgres",
                         dbname="postgres", autocommit=True) as conn:
        addrs = [str(r[0]) for r in conn.execute(
            "SELECT client_addr FROM pg_stat_replication").fetchall()]
    assert addrs == [n.region("secondary").address]
    # Nothing of the lab in the host's own namespace: no address from its /24.
    host_addrs = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    assert n.cidr.rsplit(".", 1)[0] + "." not in host_addrs


def test_fence_that_cannot_be_confirmed_stops_the_drill_before_promotion(nslab: NsLab,
                                                                         tmp_path: Path) -> None:
    """The fence phase on its own, told to stop a database that is not the one serving (its
    stop then does nothing): the check sees the old primary still answering and fails with the
    verdict that stops a drill before promote-data."""
    from drkit import lab

    cfg = nslab.cfg
    real = {role: {"port": cfg.ports[f"pg_{role}"], "host": f"region-{role}",
                   "pgdata": str(tmp_path / "not-the-cluster"), "repl_host": "",
                   "log": str(tmp_path / "pg.log"), "dsn_file": str(tmp_path / "x.dsn"),
                   "region": region}
            for role, region in (("primary", cfg.primary_region),
                                 ("secondary", cfg.secondary_region))}
    result = lab.run(nslab.plan, f"{PARTITION}/fence.yml",
                     extravars={"drkit_lab_pg": real, "drkit_run_dir": str(tmp_path)})
    assert not result.ok
    assert "fencing could not be confirmed" in str(result.failure), result.failure
    assert "stops before promotion" in str(result.failure)
    assert not (tmp_path / "fence.json").exists()
    st = lab.status(nslab.plan)  # nothing was harmed: the primary still serves
    assert st.up, [(c.name, c.detail) for c in st.components if not c.healthy]


class EdgeProber:
    """An independent prober inside the lab's edge namespace: a process of its own
    (`ip netns exec <edge> python -m drkit.lab.regionclient probe`), asking the entry point on
    the edge's address as a client on the lab's network does; its counts are read back from the
    file it writes when stopped."""

    def __init__(self, lab: NsLab, out: Path) -> None:
        n, cfg = lab.net, lab.cfg
        self.out = out
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", n.edge.netns, str(REPO / ".venv" / "bin" / "python"), "-m",
             "drkit.lab.regionclient", "probe",
             "--url", f"https://{n.edge.address}:{cfg.ports['https']}"
                      "/payments?reference_prefix=probe",
             "--ca-file", str(lab.state_dir / "ca" / "ca.crt"), "--server-name", cfg.hostname,
             "--token-file", str(lab.state_dir / "secrets" / "api.token"), "--out", str(out)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=REPO)

    def started(self) -> dict[str, Any]:
        """Its first counts (it rewrites the file twice a second), once it has some."""
        import json

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                seen: dict[str, Any] = json.loads(self.out.read_text())
                if seen["ok"] + seen["failed"] > 0:
                    return seen
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"the edge prober never answered: {self.stop()}")

    def stop(self) -> dict[str, Any]:
        import json

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, err[-2000:]
        result: dict[str, Any] = json.loads(self.out.read_text())
        return result


def test_rolling_patch_over_ssh_fails_no_request_seen_from_the_edge(nslab: NsLab,
                                                                     tmp_path: Path) -> None:
    """The rolling-patch runbook over SSH to every payments instance of both regions: each
    restarts inside its region's namespace, and an independent prober inside the edge namespace
    sees no failed request through the entry point while it runs (nor does one on the host)."""
    from drkit import flows, lab

    cfg = nslab.cfg
    st = lab.status(nslab.plan)
    names = [f"payments-{r}-{i}" for r in (cfg.primary_region, cfg.secondary_region)
             for i in range(1, cfg.instances + 1)]
    before = {name: st.component(name) for name in names}
    assert all(c is not None and c.pid for c in before.values()), before
    prober = EdgeProber(nslab, tmp_path / "edge-probe.json")
    try:
        first = prober.started()
        # Once it answers (before, its pid may still be `ip netns exec` entering the namespace).
        assert _ns_of(prober.proc.pid) == nslab.net.edge.netns  # it runs where it says
        assert first["failed"] == 0, first  # it sees the entry point serve before the patch
        client = flows.Client(f"https://127.0.0.1:{cfg.ports['https']}",
                              str(nslab.state_dir / "ca" / "ca.crt"), 5.0,
                              lab.api_token(nslab.plan))
        seen = {"ok": 0, "failed": 0}
        stop = threading.Event()

        def probe() -> None:
            while not stop.is_set():
                try:
                    ok = client.request("GET", "/payments?reference_prefix=probe").status == 200
                except OSError:
                    ok = False
                seen["ok" if ok else "failed"] += 1
                stop.wait(0.05)

        t = threading.Thread(target=probe, daemon=True)
        t.start()
        try:
            proc = subprocess.run([DRKIT, "runbook", "run", "rolling-patch", "--env", "lab",
                                   "--plan", str(nslab.plan_path),
                                   "--extra-var", "drkit_patch_version=1.0.9"],
                                  capture_output=True, text=True, timeout=900)
        finally:
            stop.set()
            t.join(10)
    finally:
        edge = prober.stop()
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    after = lab.status(nslab.plan)
    for name in names:
        c = after.component(name)
        assert c is not None and c.pid and c.pid != before[name].pid, (name, c)  # type: ignore[union-attr]
        assert "v1.0.9" in c.detail, (name, c.detail)
        role = "primary" if cfg.primary_region in name else "secondary"
        assert _ns_of(c.pid) == nslab.net.region(role).netns
    # The prober ran across the whole runbook: it started before and stopped after it.
    assert edge["ok"] > first["ok"] and edge["failed"] == 0, edge
    assert seen["ok"] > 0 and seen["failed"] == 0, seen


def _pg_state(lab: NsLab, role: str) -> str:
    """'down', 'standby' or 'primary': the region's database, through the lab's socket folder
    (a unix socket: the control path, whatever the network does)."""
    import psycopg

    try:
        with psycopg.connect(host=str(lab.state_dir / "pg" / "run"),
                             port=lab.cfg.ports[f"pg_{role}"], user="postgres",
                             dbname="postgres", autocommit=True, connect_timeout=2) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    except psycopg.Error:
        return "down"
    return "standby" if row and row[0] else "primary"


def _timeline(lab: NsLab, role: str) -> int:
    import psycopg

    with psycopg.connect(host=str(lab.state_dir / "pg" / "run"),
                         port=lab.cfg.ports[f"pg_{role}"], user="postgres", dbname="postgres",
                         autocommit=True, connect_timeout=5) as conn:
        row = conn.execute("SELECT timeline_id FROM pg_control_checkpoint()").fetchone()
    assert row is not None
    return int(row[0])


def test_drkit_killed_during_the_partition_is_recovered_by_drill_recover(nslab: NsLab) -> None:
    """SIGKILL drkit once the old primary is fenced, the standby promoted and the region still
    cut off; `drkit drill recover` (no --scenario: the killed drill's own) heals the partition,
    keeps the old primary fenced until it is rebuilt as a standby of the promoted one (a watcher
    on its socket never sees it serve as a primary before that), stops the in-region client,
    returns to the primary; then the next partition drill passes."""
    import json

    from drkit import lab
    from drkit.lab import netns
    from drkit.lab._runtime import runtime

    timeline = _timeline(nslab, "primary")
    proc = subprocess.Popen(
        [DRKIT, "drill", "run", "region-partition", "--env", "lab", "--json", "--plan",
         str(nslab.plan_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "failover-traffic: started" in line:  # after fence and promote-data
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    time.sleep(1)  # drkit's ansible-playbook shim takes its Ansible down with it
    # What the kill left: the region cut off, its database fenced (down), the standby promoted,
    # the in-region client still running inside the region.
    assert netns.partitioned(nslab.cfg, "primary")
    assert _pg_state(nslab, "primary") == "down"
    assert _pg_state(nslab, "secondary") == "primary"
    run_dir = sorted((nslab.state_dir / "runs").glob("*-region-partition"))[-1]
    client_pid = int((run_dir / "region-client.pid").read_text().split()[0])
    assert runtime.pid_alive(client_pid)
    assert json.loads((run_dir / "fence.json").read_text())["confirmed"]

    states: list[str] = []
    stop = threading.Event()

    def watch() -> None:  # the old primary, every 0.2 s, through the whole recovery
        while not stop.is_set():
            state = _pg_state(nslab, "primary")
            if not states or states[-1] != state:
                states.append(state)
            stop.wait(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        rec = subprocess.run([DRKIT, "drill", "recover", "--env", "lab", "--json", "--plan",
                              str(nslab.plan_path)], capture_output=True, text=True,
                             timeout=900)
    finally:
        stop.set()
        watcher.join(10)
    out = json.loads(rec.stdout)
    assert rec.returncode == 0, (out, rec.stderr[-3000:])
    assert out["serving"] and out["replication"] == "streaming", out
    assert out["active_region"] == nslab.cfg.primary_region, out
    assert len(out["sealed_interrupted"]) == 1, out
    # The partition is healed; the fence held until the rebuild: the old primary was down, came
    # back first as a standby of the promoted region, and only then as the primary again.
    assert not netns.partitioned(nslab.cfg, "primary")
    assert states[0] == "down" and states[-1] == "primary", states
    assert "standby" in states and states.index("standby") < states.index("primary"), states
    assert _timeline(nslab, "primary") > timeline  # rebuilt from the promoted timeline
    assert not runtime.pid_alive(client_pid)  # the partition's rollback stopped it
    st = lab.status(nslab.plan)
    assert st.up and not st.drift, [(c.name, c.detail) for c in st.components]
    # The next drill passes.
    rc, nxt, err = nslab.drill("region-partition")
    assert rc == 0 and nxt["verdict"] == "pass", (nxt.get("reasons"), err[-3000:])


def test_partition_drill_fences_and_loses_nothing_for_either_client(nslab: NsLab) -> None:
    import json

    rc, out, err = nslab.drill("region-partition")
    assert rc == 0 and out["verdict"] == "pass", (out.get("reasons"), err[-3000:])
    phases = {p["name"]: p for p in out["phases"]}
    assert [p["name"] for p in out["phases"]][:4] == ["preflight", "region-client",
                                                      "inject-fault", "fence"]
    # The evidence says which fault: the partition's own tasks ran.
    tasks = " | ".join(t["task"] for t in phases["inject-fault"]["tasks"])
    assert "Cut the primary region's link" in tasks, tasks
    # The entry point's client (the canary): nothing lost across failover and failback.
    assert out["reconciliation"]["lost_count"] == 0 and out["reconciliation"]["acked_count"] > 0
    assert out["after_failback"]["lost_count"] == 0
    assert out["reconciliation"]["ledger"]["balanced"]
    # The in-region client: nothing missing, duplicated, diverged or acknowledged after the
    # fence (reconcile-clients.yml fails otherwise); read its figures back from the run.
    run_dir = nslab.state_dir / "runs" / f"{out['id']}-region-partition"
    acks = json.loads((run_dir / "region-client.json").read_text())
    assert acks["acked"], "the in-region client acknowledged nothing"
    part = json.loads((run_dir / "partition.json").read_text())
    fence = json.loads((run_dir / "fence.json").read_text())
    assert part["fault"] == "partition" and fence["confirmed"]
    assert fence["fenced_at"] > part["partitioned_at"]
    # Issue 19: the clock starts when the link went down: the cut's own issued_at (published as
    # drkit_fault, with what it cut off), or the phase start when the canary failed first.
    assert part["issued_at"] <= part["confirmed_at"] and part["database_pid"], part
    assert len(part["instances"]) == 2, part
    source = out["rto"]["clock_started_source"]
    assert source.startswith(f"phase inject-fault's fault step: issued at {part['issued_at']}") \
        or "came before the fault step's time" in source, out["rto"]
    # The partition held from the fault until the heal (probed from the edge before it).
    assert json.loads((run_dir / "heal.json").read_text())["cut_off_until_heal"] is True
    assert phases["reconcile-clients"]["status"] == "ok"
    # The fenced primary rejoined as the primary again, its peer a streaming standby.
    from drkit import lab

    st = lab.status(nslab.plan)
    assert st.up and not st.drift, [(c.name, c.detail) for c in st.components]


def test_without_fencing_the_drill_shows_split_brain_and_fails(nslab: NsLab) -> None:
    rc, out, err = nslab.drill("region-partition-unfenced")
    assert rc == 1 and out["verdict"] == "fail", (out.get("verdict"), out.get("reasons"))
    reasons = " ".join(out.get("reasons") or [])
    # The canary's payments acknowledged by the promoted region were thrown away at failback.
    assert out["after_failback"]["lost_count"] > 0, out["after_failback"]
    assert "failback lost" in reasons
    # The in-region client names the payments the isolated old primary took.
    rec = next(p for p in out["phases"] if p["name"] == "reconcile-clients")
    assert rec["status"] == "failed", rec
    assert "split-brain" in rec["message"] and "-region:" in rec["message"], rec["message"]


def test_lab_down_leaves_no_namespace_link_process_or_port(nslab: NsLab) -> None:
    from drkit import lab
    from drkit.lab import netns
    from drkit.lab._runtime import runtime

    n = nslab.net
    before = lab.status(nslab.plan)
    pids = set(before.pids) | {p for ns in n.namespaces for p in netns.pids_in(ns)}
    assert pids
    lab.down(nslab.plan)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [ns for ns in n.namespaces if ns in listed], listed
    assert netns.leftovers(nslab.cfg) == []
    assert not [p for p in pids if runtime.pid_alive(p)]
    assert not lab.marked_pids(nslab.cfg)
    assert not [p for p in nslab.cfg.ports.values() if runtime.port_listening(p)]
    # No veth or bridge of the lab left in the host's namespace either (none was ever there).
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert "p-primary" not in links and n.prefix not in links
