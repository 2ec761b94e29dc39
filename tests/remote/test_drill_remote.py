"""The drill survives its controller (issue 18), on the namespaced topology's places:

- the shared state: a moto server in the lab's control namespace (a place no drill fails over),
- controller A: `drkit drill run` inside the primary region's namespace,
- the execution node: the secondary region's sshd (this machine, this venv),
- controller B: `drkit drill attach` inside the edge namespace.

A starts the drill's driver detached on the node and follows it; A is killed mid-drill; the
drill goes on to its verdict on the node; a third controller racing for the environment is
refused naming the holder; B attaches and sees the verdict; the evidence the node sealed with
the plan's key verifies. The scenario's phases are small real playbooks (local connection on
the node), not the payments lab: what is under test is where the drill runs and who sees it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from drkit.lab import netns

pytestmark = [pytest.mark.lab]

DRKIT = str(Path(sys.executable).parent / "drkit")
MOTO = str(Path(sys.executable).parent / "moto_server")
PB = {
    "preflight": "- name: Preflight\n  hosts: all\n  gather_facts: false\n  tasks:\n"
                 "    - name: Say ready\n      ansible.builtin.debug:\n        msg: ready\n",
    "inject": "- name: Inject\n  hosts: all\n  gather_facts: false\n  tasks:\n"
              "    - name: Record where the fault was injected from\n"
              "      ansible.builtin.command: readlink /proc/self/ns/net\n"
              "      changed_when: true\n",
    # The window in which controller A is killed.
    "recover": "- name: Recover\n  hosts: all\n  gather_facts: false\n  tasks:\n"
               "    - name: Take a while\n      ansible.builtin.command: sleep 12\n"
               "      changed_when: true\n",
    "smoke": "- name: Smoke\n  hosts: all\n  gather_facts: false\n  tasks:\n"
             "    - name: Check\n      ansible.builtin.debug:\n        msg: ok\n",
}


def _plan(root: Path, nodes, endpoint: str, bucket: str) -> Path:
    import yaml

    from drkit.evidence import generate_keypair

    for name, text in PB.items():
        (root / f"{name}.yml").write_text(text)
    (root / "inv.ini").write_text(
        f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    node = nodes.node_config("secondary")
    node["ssh_executable"] = "/usr/bin/ssh"  # the controllers already run inside namespaces
    plan = {
        "version": 1,
        "regions": {"primary": nodes.net.region("primary").region,
                    "secondary": nodes.net.region("secondary").region},
        "environments": {"prod": {
            "inventory": "inv.ini",
            "state": {"s3": f"s3://{bucket}/drills", "region": "eu-north-1",
                      # short: two tests wait for a killed driver's lease to run out
                      "endpoint_url": endpoint, "lease": "12s"},
            "execution_nodes": {nodes.net.region("secondary").region: node}}},
        "services": {"payments": {"tier": 1, "rto": "10m", "rpo": "0s"}},
        "scenarios": {"region-failover": {"services": ["payments"], "phases": [
            {"name": "preflight", "playbook": "preflight.yml"},
            {"name": "inject-fault", "playbook": "inject.yml", "starts_clock": True},
            {"name": "recover", "playbook": "recover.yml"},
            {"name": "smoke", "playbook": "smoke.yml", "stops_clock": True}]}},
        "evidence": {"store": "./evidence", "signing_key": "keys/evidence.key"},
    }
    (root / "drkit.yml").write_text(yaml.safe_dump(plan, sort_keys=False))
    generate_keypair(root / "keys" / "evidence.key")
    return root / "drkit.yml"


def _in(ns: str, argv: list[str]) -> list[str]:
    return [netns.IP, "netns", "exec", ns, *argv]


@pytest.fixture
def shared_moto(nodes, tmp_path):
    """moto in the control namespace, on the lab's /24: every region reaches it."""
    ctl = nodes.net.ctl
    endpoint = f"http://{ctl.address}:5000"
    proc = subprocess.Popen(_in(ctl.netns, [MOTO, "-H", ctl.address, "-p", "5000"]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    creds = tmp_path / "aws-credentials"
    creds.write_text("[default]\naws_access_key_id = testing\n"
                     "aws_secret_access_key = testing\n")
    env = {**os.environ, "AWS_SHARED_CREDENTIALS_FILE": str(creds),
           "AWS_DEFAULT_REGION": "eu-north-1"}
    for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(k, None)
    try:
        make = (f"import boto3,time\nfor i in range(100):\n  try:\n"
                f"    boto3.client('s3',endpoint_url={endpoint!r}).create_bucket(Bucket="
                f"'drkit-state',CreateBucketConfiguration={{'LocationConstraint':'eu-north-1'}})"
                f"\n    break\n  except Exception:\n    time.sleep(0.2)\n"
                f"else:\n  raise SystemExit(1)")
        subprocess.run(_in(nodes.net.edge.netns, [sys.executable, "-c", make]), env=env,
                       check=True, timeout=60)
        yield endpoint, env
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_drill_survives_its_controller_and_another_controller_sees_its_verdict(
        nodes, shared_moto, tmp_path):
    """... and runs to its end, rollback included: its smoke phase fails after the controller
    was killed, and the node's driver rolls back there."""
    import yaml

    endpoint, env = shared_moto
    plan = _plan(tmp_path, nodes, endpoint, "drkit-state")
    where = tmp_path / "rolled-back-in"
    (tmp_path / "smoke.yml").write_text(
        "- name: Smoke\n  hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - name: Check\n      ansible.builtin.fail:\n        msg: payments not served\n")
    (tmp_path / "rollback.yml").write_text(
        "- name: Rollback\n  hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - name: Record where the rollback ran\n"
        f"      ansible.builtin.shell: readlink /proc/self/ns/net > {where}\n"
        "      changed_when: true\n")
    data = yaml.safe_load(plan.read_text())
    data["scenarios"]["region-failover"]["rollback"] = "rollback.yml"
    plan.write_text(yaml.safe_dump(data, sort_keys=False))
    primary, edge = nodes.net.region("primary").netns, nodes.net.edge.netns
    a = subprocess.Popen(_in(primary, [DRKIT, "drill", "run", "region-failover", "-e", "prod",
                                       "-p", str(plan)]),
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_id, seen = None, []
    assert a.stdout is not None
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        line = a.stdout.readline()
        if not line:
            break
        seen.append(line.rstrip())
        if line.startswith("drill ") and " runs on execution node " in line:
            run_id = line.split()[1]
        if "phase recover started" in line:
            break
    assert run_id and "phase recover started" in seen[-1], (seen, a.stderr.read() if
                                                            a.poll() is not None else "")
    # The driver runs detached on the node, in the secondary region's namespace.
    drivers = [int(p) for p in os.listdir("/proc") if p.isdigit() and
               f"--run-id\0{run_id}".encode() in _cmdline(int(p))]
    assert drivers, "no driver process on the node"
    assert {os.readlink(f"/proc/{p}/ns/net") for p in drivers} == {
        nodes.netns_inode("secondary")}
    # Controller A is killed mid-drill.
    a.send_signal(signal.SIGKILL)
    a.wait(10)
    # A third controller racing for the environment is refused, naming the holder.
    c = subprocess.run(_in(edge, [DRKIT, "drill", "run", "region-failover", "-e", "prod",
                                  "-p", str(plan)]), env=env, capture_output=True, text=True,
                       timeout=120)
    assert c.returncode == 2, c.stdout + c.stderr
    assert f"another controller holds environment 'prod': `drkit drill run region-failover` " \
           f"(run {run_id})" in c.stderr and "Traceback" not in c.stderr
    st = subprocess.run(_in(edge, [DRKIT, "drill", "status", "-p", str(plan)]), env=env,
                        capture_output=True, text=True, timeout=60)
    assert st.returncode == 0 and f"prod: running {run_id}" in st.stdout, st.stdout + st.stderr
    # Controller B, at the edge, attaches and sees the verdict the node reached.
    b = subprocess.run(_in(edge, [DRKIT, "drill", "attach", run_id, "-e", "prod", "-p",
                                  str(plan)]), env=env, capture_output=True, text=True,
                       timeout=300)
    out = b.stdout
    assert "phase recover ok" in out and "phase smoke failed" in out, out + b.stderr
    assert "phase rollback ok" in out, out + b.stderr
    # The rollback ran on the node, after the controller was gone.
    assert where.read_text().strip() == nodes.netns_inode("secondary")
    verdict_line = [x for x in out.splitlines() if x.startswith("verdict: ")]
    assert verdict_line, out + b.stderr
    # The judge's verdict, as the node computed it; what matters is that B sees it.
    assert "verdict: fail (exit 1); evidence " in verdict_line[0], out
    assert b.returncode == 1
    # The run's artifacts are in the shared state too, not only on the node.
    j = subprocess.run(_in(edge, [DRKIT, "drill", "attach", run_id, "-e", "prod", "-p",
                                  str(plan), "--json"]), env=env, capture_output=True,
                       text=True, timeout=120)
    import json

    kept = json.loads(j.stdout)["artifacts"]
    assert {"recovery/stdout", "recovery/job_events.jsonl", "progress.json"} <= set(kept), kept
    # The node sealed the evidence with the plan's key; it verifies from here.
    v = subprocess.run([DRKIT, "evidence", "verify", "-p", str(plan), "--store",
                        str(tmp_path / "evidence")], capture_output=True, text=True, timeout=120)
    assert v.returncode == 0 and "intact: 1 records" in v.stdout, v.stdout + v.stderr
    evidence_id = verdict_line[0].rsplit(" ", 1)[1]
    shown = subprocess.run([DRKIT, "evidence", "show", evidence_id, "-p", str(plan), "--store",
                            str(tmp_path / "evidence"), "--json"], capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0 and '"fail"' in shown.stdout, shown.stderr
    st = subprocess.run(_in(edge, [DRKIT, "drill", "status", "-p", str(plan)]), env=env,
                        capture_output=True, text=True, timeout=60)
    assert st.returncode == 0 and "prod: no drill running" in st.stdout, st.stdout + st.stderr


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def test_without_shared_state_the_drill_streams_its_playbooks_to_the_surviving_node(
        nodes, tmp_path):
    """Execution nodes but no `state`: the driver stays on the controller and each phase's
    playbook runs on the secondary region's node (transmit | worker | process)."""
    import yaml

    plan_path = _plan(tmp_path, nodes, "http://unused", "unused")
    data = yaml.safe_load(plan_path.read_text())
    env = data["environments"]["prod"]
    del env["state"]
    node = env["execution_nodes"][nodes.net.region("secondary").region]
    node["ssh_executable"] = str(nodes.net.bin_dir / "ssh")  # this test's drkit is on the host
    where = tmp_path / "where"
    data["scenarios"]["region-failover"]["phases"][1]["playbook"] = "inject-where.yml"
    (tmp_path / "inject-where.yml").write_text(
        "- name: Inject\n  hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - name: Record where the fault was injected from\n"
        f"      ansible.builtin.shell: readlink /proc/self/ns/net > {where}\n"
        "      changed_when: true\n")
    (tmp_path / "recover.yml").write_text(PB["smoke"].replace("Smoke", "Recover"))
    plan_path.write_text(yaml.safe_dump(data, sort_keys=False))
    r = subprocess.run([DRKIT, "drill", "run", "region-failover", "-e", "prod", "-p",
                        str(plan_path), "--json"], capture_output=True, text=True, timeout=600)
    import json

    out = json.loads(r.stdout)
    assert [(p["name"], p["status"]) for p in out["phases"]] == [
        ("preflight", "ok"), ("inject-fault", "ok"), ("recover", "ok"), ("smoke", "ok")], out
    assert where.read_text().strip() == nodes.netns_inode("secondary")
    assert where.read_text().strip() != os.readlink("/proc/self/ns/net")


def test_a_drill_whose_driver_died_is_recovered_on_its_node_from_another_controller(
        nodes, shared_moto, tmp_path):
    """The node's driver is killed too (the node lost the process): its lease expires, `drill
    status` says so, and `drill recover` from the edge runs on the node (where the run's folder
    and lock are), takes the lease with the next token, seals the interrupted record and runs
    the scenario's rollback there."""
    import yaml

    endpoint, env = shared_moto
    plan = _plan(tmp_path, nodes, endpoint, "drkit-state")
    data = yaml.safe_load(plan.read_text())
    where = tmp_path / "rolled-back-in"
    (tmp_path / "rollback.yml").write_text(
        "- name: Rollback\n  hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - name: Record where the rollback ran\n"
        f"      ansible.builtin.shell: readlink /proc/self/ns/net > {where}\n"
        "      changed_when: true\n")
    data["scenarios"]["region-failover"]["rollback"] = "rollback.yml"
    plan.write_text(yaml.safe_dump(data, sort_keys=False))
    primary, edge = nodes.net.region("primary").netns, nodes.net.edge.netns
    a = subprocess.Popen(_in(primary, [DRKIT, "drill", "run", "region-failover", "-e", "prod",
                                       "-p", str(plan)]),
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_id = None
    assert a.stdout is not None
    for line in a.stdout:
        if line.startswith("drill ") and " runs on execution node " in line:
            run_id = line.split()[1]
        if "phase recover started" in line:
            break
    assert run_id
    drivers = [int(p) for p in os.listdir("/proc") if p.isdigit() and
               f"--run-id\0{run_id}".encode() in _cmdline(int(p))]
    assert drivers
    for pid in drivers:
        os.kill(pid, signal.SIGKILL)
    a.send_signal(signal.SIGKILL)
    a.wait(10)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        st = subprocess.run(_in(edge, [DRKIT, "drill", "status", "-p", str(plan)]), env=env,
                            capture_output=True, text=True, timeout=60)
        if "lease expired without a release" in st.stdout:
            break
        time.sleep(2)
    assert "prod: no drill running (the last holder's lease expired without a release" \
        in st.stdout, st.stdout + st.stderr
    r = subprocess.run(_in(edge, [DRKIT, "drill", "recover", "-e", "prod", "-p", str(plan)]),
                       env=env, capture_output=True, text=True, timeout=600)
    # No entry point is declared, so serving is not observed: exit 3, said plainly.
    assert r.returncode == 3 and "prod: NOT serving payments" in r.stdout, r.stdout + r.stderr
    assert "evidence: sealed interrupted run" in r.stdout, r.stdout
    assert where.read_text().strip() == nodes.netns_inode("secondary")
    # The recovery took the lease with the next fencing token, and released it.
    st = subprocess.run(_in(edge, [DRKIT, "drill", "status", "-p", str(plan), "--json"]),
                        env=env, capture_output=True, text=True, timeout=60)
    import json

    row = json.loads(st.stdout)["environments"][0]
    assert (row["token"], row["running"], row["expired"]) == (2, False, False), row
    v = subprocess.run([DRKIT, "evidence", "verify", "-p", str(plan), "--store",
                        str(tmp_path / "evidence")], capture_output=True, text=True, timeout=120)
    assert v.returncode == 0 and "intact: 1 records" in v.stdout, v.stdout + v.stderr


def test_a_drill_whose_driver_died_is_resumed_on_its_node_from_another_controller(
        nodes, shared_moto, tmp_path):
    """`drill resume RUN_ID` from the edge finds the run in the shared state and resumes it on
    the node that holds its run folder: the phases it finished are not run again."""
    endpoint, env = shared_moto
    plan = _plan(tmp_path, nodes, endpoint, "drkit-state")
    where = tmp_path / "smoke-ran-in"
    (tmp_path / "smoke.yml").write_text(
        "- name: Smoke\n  hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - name: Record where smoke ran\n"
        f"      ansible.builtin.shell: readlink /proc/self/ns/net > {where}\n"
        "      changed_when: true\n")
    primary, edge = nodes.net.region("primary").netns, nodes.net.edge.netns
    a = subprocess.Popen(_in(primary, [DRKIT, "drill", "run", "region-failover", "-e", "prod",
                                       "-p", str(plan)]),
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_id = None
    assert a.stdout is not None
    for line in a.stdout:
        if line.startswith("drill ") and " runs on execution node " in line:
            run_id = line.split()[1]
        if "phase recover started" in line:
            break
    assert run_id
    for pid in [int(p) for p in os.listdir("/proc") if p.isdigit() and
                f"--run-id\0{run_id}".encode() in _cmdline(int(p))]:
        os.kill(pid, signal.SIGKILL)
    a.send_signal(signal.SIGKILL)
    a.wait(10)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        st = subprocess.run(_in(edge, [DRKIT, "drill", "status", "-p", str(plan)]), env=env,
                            capture_output=True, text=True, timeout=60)
        if "lease expired without a release" in st.stdout:
            break
        time.sleep(2)
    r = subprocess.run(_in(edge, [DRKIT, "drill", "resume", run_id, "-p", str(plan),
                                  "--json"]), env=env, capture_output=True, text=True,
                       timeout=600)
    import json

    out = json.loads(r.stdout)
    assert out["resumed_from"]["run_id"] == run_id, out
    # The first run's finished phases are carried over; the resumed run did the rest.
    assert [(p["name"], p["status"]) for p in out["phases"]] == [
        ("preflight", "ok"), ("inject-fault", "ok"), ("recover", "ok"), ("smoke", "ok")], out
    assert r.returncode == 1 and out["verdict"] == "inconclusive"  # no smoke flows observed
    # The resumed phases ran on the node (the resume was forwarded there), not at the edge.
    assert where.read_text().strip() == nodes.netns_inode("secondary")


# ---------------------------------------------------------------------------------------------
# A driver on the controller whose phases run streamed on the node, with a shared lease: one
# ansible-runner run per phase (a gate play cannot wait for a driver on another machine), the
# lease proven (a fenced renewal) before each one. What only the library reaches: `drkit drill
# run` detaches the driver to the node (or runs it --here, unstreamed).

STREAMED = ("preflight", "inject-fault", "smoke", "failback", "reconcile")


def _streamed_plan(root: Path, nodes, state_url: str, endpoint: str) -> Path:
    import yaml

    from drkit.evidence import generate_keypair

    marks = root / "markers"
    marks.mkdir()
    for name in (*STREAMED, "rollback"):
        # Each phase leaves where it ran: the network namespace of the process running it.
        (root / f"{name}.yml").write_text(
            f"- name: Phase {name}\n  hosts: all\n  gather_facts: false\n  tasks:\n"
            f"    - name: Record where {name} ran\n"
            f"      ansible.builtin.shell: readlink /proc/self/ns/net > {marks / name}\n"
            "      changed_when: true\n")
    (root / "inv.ini").write_text(
        f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    phases = [{"name": n, "playbook": f"{n}.yml"} for n in STREAMED]
    phases[1]["starts_clock"] = phases[2]["stops_clock"] = True
    phases[3]["failback"] = phases[4]["failback"] = True
    plan = {
        "version": 1,
        "regions": {"primary": nodes.net.region("primary").region,
                    "secondary": nodes.net.region("secondary").region},
        "environments": {"prod": {
            "inventory": "inv.ini",
            "state": {"s3": state_url, "region": "eu-north-1", "endpoint_url": endpoint,
                      "lease": "60s"},
            "execution_nodes": {nodes.net.region("secondary").region:
                                nodes.node_config("secondary")}}},
        "services": {"payments": {"tier": 1, "rto": "10m", "rpo": "0s"}},
        "scenarios": {"s": {"services": ["payments"], "rollback": "rollback.yml",
                            "phases": phases}},
        "evidence": {"store": "./evidence", "signing_key": "keys/evidence.key"},
    }
    (root / "drkit.yml").write_text(yaml.safe_dump(plan, sort_keys=False))
    generate_keypair(root / "keys" / "evidence.key")
    return root / "drkit.yml"


class _Log:
    """What the driver did, in order: its lease proofs (the real check, watched) and the phases
    as its listener heard them."""

    def __init__(self, monkeypatch) -> None:
        from drkit.drill import DrillListener, shared

        self.events: list[tuple] = []
        real = shared.still_held
        log = self.events

        def still_held(lease, cancel):
            ok = real(lease, cancel)
            log.append(("proved", ok, lease.record.expires_at))
            return ok

        monkeypatch.setattr(shared, "still_held", still_held)

        class Listener(DrillListener):
            def phase_started(self, name, at):
                log.append(("started", name))

            def phase_finished(self, result):
                log.append(("finished", result.name, str(result.status)))

        self.listener = Listener()


def test_a_streamed_drill_with_a_shared_lease_proves_it_before_each_phase(
        nodes, state_bucket, moto_url, tmp_path, monkeypatch):
    from drkit.config import load_plan
    from drkit.drill import run_drill
    from drkit.state import state_from

    plan = load_plan(_streamed_plan(tmp_path, nodes, state_bucket, moto_url))
    log = _Log(monkeypatch)
    out = run_drill(plan, "s", "prod", listener=log.listener)

    # Every phase ran, each on the node (the secondary region's namespace), none here.
    assert [(p.name, str(p.status)) for p in out.phases] == [(n, "ok") for n in STREAMED], \
        out.phases
    where = {n: (tmp_path / "markers" / n).read_text().strip() for n in STREAMED}
    assert set(where.values()) == {nodes.netns_inode("secondary")}, where
    assert not (tmp_path / "markers" / "rollback").exists()
    # One streamed run per phase, each proved first: a successful fenced renewal (a later
    # expiry written to the bucket each time) right before each phase started.
    runs = sorted(p.name for p in Path(out.artifacts_dir).iterdir() if p.is_dir())
    assert runs == ["failback", "failback-2", "recovery", "recovery-2", "recovery-3"], runs
    for name in STREAMED:
        i = log.events.index(("started", name))
        assert log.events[i - 1][:2] == ("proved", True), (name, log.events)
    proofs = [e[2] for e in log.events if e[0] == "proved"]
    assert len(proofs) == len(STREAMED) and proofs == sorted(set(proofs)), log.events
    # The verdict: these phases publish no smoke flows, so not a pass; nothing about the lease.
    assert str(out.verdict) == "inconclusive" and out.exit_code == 1, out.reasons
    assert not any("lease" in r for r in (*out.reasons, *out.warnings)), out
    # The shared state has the run: every phase, the verdict, the artifacts; the lease free.
    state = state_from(state_bucket, region="eu-north-1", endpoint_url=moto_url)
    done = [(e.data["name"], e.data["status"]) for e in state.journal(out.id)
            if e.kind == "phase"]
    assert done == [(n, "ok") for n in STREAMED], done
    result = state.result(out.id)
    assert result is not None and result["verdict"] == "inconclusive" and result["token"] == 1
    assert {"recovery/stdout", "recovery-3/job_events.jsonl", "failback-2/stdout"} <= set(
        state.artifacts(out.id)), state.artifacts(out.id)
    lease = state.lease("prod")
    assert lease is not None and lease.released and lease.token == 1
    # The evidence the driver sealed verifies.
    v = subprocess.run([DRKIT, "evidence", "verify", "-p", str(plan.path)], capture_output=True,
                       text=True, timeout=120)
    assert v.returncode == 0 and "intact: 1 records" in v.stdout, v.stdout + v.stderr


def test_a_streamed_drill_that_lost_its_lease_starts_no_further_phase(
        nodes, state_bucket, moto_url, tmp_path, monkeypatch):
    """While phase `inject-fault` runs on the node, the driver's lease runs out in the bucket and
    another controller takes it (fencing token 2): no further phase starts, nothing is rolled
    back, nothing more is written to the shared state."""
    from dataclasses import replace

    from drkit.config import load_plan
    from drkit.drill import run_drill
    from drkit.state import Conflict, LeaseRecord, state_from

    plan = load_plan(_streamed_plan(tmp_path, nodes, state_bucket, moto_url))
    state = state_from(state_bucket, region="eu-north-1", endpoint_url=moto_url)
    log = _Log(monkeypatch)
    taken: list = []
    heard = log.listener.phase_started

    def phase_started(name, at):
        heard(name, at)
        if name != "inject-fault":
            return
        key = "envs/prod/lease.json"
        while True:
            body, etag = state.blobs.get(key)  # type: ignore[misc]
            try:
                state.blobs.replace(key, replace(LeaseRecord.parse(body),
                                                 expires_at=time.time() - 1).to_bytes(), etag)
                break
            except Conflict:  # the driver renewed meanwhile: expire its new lease
                continue
        taken.append(time.time())
        taken.append(state_from(state_bucket, region="eu-north-1", endpoint_url=moto_url)
                     .acquire("prod", "drill recover --scenario s", run_id="takeover",
                              ttl=60, operator="controller-2"))

    log.listener.phase_started = phase_started  # type: ignore[method-assign]
    out = run_drill(plan, "s", "prod", listener=log.listener)

    assert taken and taken[1].token == 2
    assert str(out.verdict) == "aborted" and out.exit_code == 3, out
    phases = {p.name: (str(p.status), p.message) for p in out.phases}
    assert phases["preflight"][0] == "ok", phases
    assert phases["smoke"] == ("skipped", "not started: this driver lost its lease"), phases
    assert phases["failback"][0] == phases["reconcile"][0] == "skipped", phases
    assert "rollback" not in phases, phases
    said = " ".join(out.reasons)
    assert "this driver lost its lease" in said and "fencing token 2" in said, said
    assert "it ran no rollback" in said, said
    ran = sorted(p.name for p in (tmp_path / "markers").iterdir())
    assert ran in (["preflight"], ["inject-fault", "preflight"]), ran
    assert ("started", "smoke") not in log.events, log.events
    # Nothing more in the shared state from this driver: no entry after the takeover, no
    # result, no artifacts; the lease is still the new holder's.
    mine = [json.loads(state.blobs.get(k)[0])  # type: ignore[index]
            for k in state.blobs.list(f"runs/{out.id}/journal/")]
    assert mine and all(e["token"] == 1 and e["at"] <= taken[0] for e in mine), mine
    assert state.result(out.id) is None and state.artifacts(out.id) == []
    now = state.lease("prod")
    assert now is not None and now.token == 2 and not now.released
    v = subprocess.run([DRKIT, "evidence", "verify", "-p", str(plan.path)], capture_output=True,
                       text=True, timeout=120)
    assert v.returncode == 0 and "intact: 1 records" in v.stdout, v.stdout + v.stderr
