"""The lab end to end: real moto, PostgreSQL primary + standby, payments APIs and HAProxy."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from drkit.cli import app
from tests.conftest import LabHandle, wait_until

pytestmark = pytest.mark.lab


def _payment_body() -> dict[str, object]:
    token = uuid.uuid4().hex[:10]
    return {"amount_cents": 1234, "currency": "EUR", "from_account": f"payer-{token}",
            "to_account": f"payee-{token}", "reference": f"lab-test:{token}"}


def test_status_reports_every_component_healthy(lab: LabHandle) -> None:
    st = lab.status()
    assert st.up, [c for c in st.components if not c.healthy]
    assert st.active_region == lab.primary_region
    kinds = {c.kind for c in st.components}
    assert kinds == {"aws", "stack", "postgres", "payments", "haproxy", "entry"}
    n = lab.config.instances
    assert len([c for c in st.components if c.kind == "payments"]) == 2 * n
    for c in st.components:
        if c.kind in ("aws", "postgres", "payments", "haproxy"):
            assert c.pid and c.port, c
    standby = st.component(f"postgres-{lab.secondary_region}")
    assert standby is not None and standby.detail.startswith("standby, streaming")
    primary = st.component(f"postgres-{lab.primary_region}")
    assert primary is not None and lab.secondary_region in primary.detail
    # Every port is the lab's own: none of the common ones.
    assert not {5432, 80, 443, 8080, 5000} & set(lab.ports.values())


def test_payment_through_the_tls_entry_point_reaches_the_standby(lab: LabHandle) -> None:
    body = _payment_body()
    key = uuid.uuid4().hex
    status, created = lab.https_post("/payments", body, headers={"Idempotency-Key": key})
    assert status == 201, created
    assert created["status"] == "authorized"
    # The same request again is an idempotent replay, not a second payment.
    status, again = lab.https_post("/payments", body, headers={"Idempotency-Key": key})
    assert status in (200, 201) and again["id"] == created["id"]

    # Served by the primary region (HAProxy's map says so, and so does the response header).
    status, health = lab.https_get("/healthz")
    assert status == 200 and health["region"] == lab.primary_region and health["db_writable"]

    # Read it back from the secondary region's standby: streaming replication carried it.
    def on_standby() -> object:
        with lab.pg("secondary") as conn:
            return conn.execute("SELECT amount_cents, currency, status FROM payments "
                                "WHERE id = %s", (created["id"],)).fetchone()

    row = wait_until(on_standby, timeout=10)
    assert row == (1234, "EUR", "authorized")
    with lab.pg("secondary") as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)


def test_entry_certificate_is_issued_by_the_lab_ca_for_the_lab_names(lab: LabHandle) -> None:
    # Verified for the lab hostname (SNI) as well as for 127.0.0.1 (https_get's default).
    status, _ = lab.https_get("/healthz", server_hostname=lab.hostname)
    assert status == 200
    status, _ = lab.https_get("/healthz", server_hostname="localhost")
    assert status == 200
    # Without the lab CA the certificate is not trusted: the check above really verifies.
    with socket.create_connection(("127.0.0.1", lab.ports["https"]), timeout=5) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            ssl.create_default_context().wrap_socket(raw, server_hostname=lab.hostname)
    # And a name the certificate does not carry is refused.
    with pytest.raises(ssl.SSLCertVerificationError):
        lab.https_get("/healthz", server_hostname="evil.example")


def test_second_lab_up_changes_nothing(lab: LabHandle) -> None:
    st = lab.up()
    assert st.changed == 0, st.to_json()["runs"]
    assert st.message == "lab already up: nothing changed"
    assert st.up


def test_cli_status_json_and_up_json(lab: LabHandle) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["lab", "status", "--json", "--plan", str(lab.plan_path)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["up"] is True and data["active_region"] == lab.primary_region
    assert {c["name"] for c in data["components"]} >= {"moto", "haproxy", "entry"}
    res = runner.invoke(app, ["lab", "up", "--json", "--plan", str(lab.plan_path)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["changed"] == 0 and data["up"] is True


def test_stack_outputs_and_route53_records_are_in_the_control_plane(lab: LabHandle) -> None:
    import boto3

    outputs = json.loads((lab.state_dir / "aws" / "outputs.json").read_text())
    assert set(outputs["stacks"]) == {lab.primary_region, lab.secondary_region}
    assert outputs["stacks"][lab.primary_region]["Role"] == "primary"
    assert outputs["stacks"][lab.secondary_region]["Role"] == "secondary"
    endpoint = f"http://127.0.0.1:{lab.ports['moto']}"
    creds = {"aws_access_key_id": "x", "aws_secret_access_key": "y"}
    for region in (lab.primary_region, lab.secondary_region):
        cfn = boto3.client("cloudformation", region_name=region, endpoint_url=endpoint, **creds)
        stack = cfn.describe_stacks(StackName="drkit-payments")["Stacks"][0]
        # A drill's recreate-stack and failback update the stack: both are healthy states.
        assert stack["StackStatus"] in ("CREATE_COMPLETE", "UPDATE_COMPLETE")
    assert lab.route53_failover() == {"PRIMARY": f"{lab.primary_region}.{lab.hostname}",
                        "SECONDARY": f"{lab.secondary_region}.{lab.hostname}"}


def test_lab_up_restarts_what_died(lab: LabHandle) -> None:
    """A crashed API instance and a crashed moto (its stacks lost with it) come back."""
    st = lab.status()
    api = st.component(f"payments-{lab.primary_region}-1")
    moto = st.component("moto")
    assert api and api.pid and moto and moto.pid
    os.kill(api.pid, signal.SIGKILL)
    os.kill(moto.pid, signal.SIGKILL)
    broken = wait_until(lambda: not lab.status().up, timeout=5)
    assert broken
    st = lab.up()
    assert st.up and st.changed and st.changed > 0
    assert st.component("moto").pid != moto.pid
    assert st.component(f"stack-{lab.primary_region}").healthy


# The lab is down afterwards: run it after the session's other lab tests.
@pytest.mark.lab_last
def test_lab_down_leaves_no_process_and_no_port(lab: LabHandle) -> None:
    from drkit.lab._runtime import runtime

    pids = lab.status().pids
    assert pids
    st = lab.down()
    assert not st.up
    assert [p for p in pids if runtime.pid_alive(p)] == []
    assert [p for p in lab.ports.values() if runtime.port_listening(p)] == []
    # Only the run logs stay.
    # What lab down keeps: the run logs, and the drills' lock files (drkit's, not the lab's).
    # runs/ and locks/ are kept, and the marker that lets `lab down` remove folders here.
    left = sorted(p.name for p in lab.state_dir.iterdir() if p.name != ".drkit-lab")
    assert left in (["runs"], ["locks", "runs"])
    again = lab.down()
    assert again.changed == 0
    # The next test that asks for `lab` gets it back up (the fixture repairs it).


# ---- bad environments: one line, exit 3, never a traceback -------------------------------


def _cli_up(env: dict[str, str], plan: Path) -> object:
    return CliRunner().invoke(app, ["lab", "up", "--plan", str(plan)], env=env)


@pytest.fixture
def fresh_env(lab_session: LabHandle) -> Iterator[dict[str, str]]:
    """A state dir the lab's `postgres` user could reach, and a free port range."""
    from tests.conftest import free_port_base

    root = Path(tempfile.mkdtemp(prefix="drkit-lab-env-", dir="/tmp"))
    os.chmod(root, 0o755)
    yield {"DRKIT_LAB_DIR": str(root / "state"), "DRKIT_LAB_PORT_BASE": str(free_port_base())}
    shutil.rmtree(root, ignore_errors=True)


def test_port_in_use_by_another_process_is_named(fresh_env: dict[str, str],
                                                  lab_session: LabHandle) -> None:
    port = int(fresh_env["DRKIT_LAB_PORT_BASE"]) + 2  # pg_primary
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", port))
    squatter.listen()
    try:
        res = _cli_up(fresh_env, lab_session.plan_path)
    finally:
        squatter.close()
    assert res.exit_code == 3, res.output
    assert f"port {port} (pg_primary) is in use by pid {os.getpid()}" in res.output
    assert "Traceback" not in res.output


def test_state_dir_that_cannot_be_created(fresh_env: dict[str, str], lab_session: LabHandle,
                                          tmp_path: Path) -> None:
    # Under a regular file: mkdir fails (a path under /proc is refused earlier, as bad input).
    (tmp_path / "a-file").write_text("")
    where = tmp_path / "a-file" / "drkit-lab"
    env = dict(fresh_env, DRKIT_LAB_DIR=str(where))
    res = _cli_up(env, lab_session.plan_path)
    assert res.exit_code == 3, res.output
    assert f"state dir {where} cannot be created" in res.output


def test_missing_postgresql_binaries(fresh_env: dict[str, str], lab_session: LabHandle,
                                     monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import drkit.lab

    monkeypatch.setattr(drkit.lab, "PG_BIN_DIR", tmp_path / "no-such-bin")
    res = _cli_up(fresh_env, lab_session.plan_path)
    assert res.exit_code == 3, res.output
    assert "PostgreSQL 15 binaries missing" in res.output and "run scripts/install" in res.output


def test_a_lab_left_failed_over_is_not_rebuilt_over_its_data(
        fresh_env: dict[str, str], lab_session: LabHandle) -> None:
    state = Path(fresh_env["DRKIT_LAB_DIR"])
    promoted = state / "pg" / lab_session.secondary_region / "data"
    promoted.mkdir(parents=True)
    (promoted / "PG_VERSION").write_text("15\n")  # a cluster, and no standby.signal
    res = _cli_up(fresh_env, lab_session.plan_path)
    assert res.exit_code == 3, res.output
    assert "the lab is failed over" in res.output and "drkit lab down" in res.output
    # ... and names what repairs it, never `lab up` again (issue 12).
    assert "`drkit drill recover --env lab`" in res.output and "lab up` again" not in res.output
