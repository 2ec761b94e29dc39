"""A lab only its owner can use (issue 16), seen from another local user and from the network.

Each test observes the refusal on the real lab (the session's `lab` fixture): the payments API
without its bearer token, PostgreSQL's superuser and replication over TCP or from user
`nobody`, HAProxy's stats page; and `lab down` on a folder it did not make.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from drkit.cli import app

PSQL = "/usr/lib/postgresql/15/bin/psql"


def _as_nobody(host: str, port: str, user: str) -> subprocess.CompletedProcess[str]:
    """psql as user `nobody` (a local user who is not the lab's owner)."""
    return subprocess.run([PSQL, "-X", "-w", "-h", host, "-p", port, "-U", user, "-d",
                           "postgres", "-c", "SELECT 1"], user="nobody", group="nogroup",
                          extra_groups=[], capture_output=True, text=True, timeout=30, cwd="/",
                          env={"PATH": "/usr/bin:/bin", "PGCONNECT_TIMEOUT": "3"})


def test_the_payments_api_needs_the_bearer_token(lab: Any) -> None:
    body = {"amount_cents": 100, "currency": "EUR", "from_account": "acct-a",
            "to_account": "acct-b", "reference": "security-test"}
    status, answer = lab.https_post("/payments", body, auth=False)
    assert status == 401 and "bearer token" in answer["error"], (status, answer)
    status, _ = lab.https_post("/payments", body,
                               headers={"Authorization": "Bearer not-the-token"})
    assert status == 401
    status, _ = lab.https_get("/ledger/verify", auth=False)
    assert status == 401
    # Straight to an instance, past HAProxy: the same refusal.
    port = lab.ports["api_primary_1"]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /payments?reference_prefix=x HTTP/1.0\r\nHost: x\r\n\r\n")
        assert s.recv(64).startswith(b"HTTP/1.0 401"), "an instance answered without a token"
    # /healthz stays open (HAProxy's checks), and the token works.
    assert lab.https_get("/healthz", auth=False)[0] == 200
    status, created = lab.https_post("/payments", body)
    assert status == 201, created
    token_file = lab.state_dir / "secrets" / "api.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700


def test_postgresql_refuses_tcp_superuser_and_replication(lab: Any) -> None:
    import psycopg

    for user, dbname in (("postgres", "postgres"), ("replication", "replication")):
        kw = {"replication": "true"} if user == "replication" else {}
        with pytest.raises(psycopg.OperationalError) as e:
            psycopg.connect(host="127.0.0.1", port=lab.ports["pg_primary"], user=user,
                            dbname=dbname if not kw else "postgres", connect_timeout=3,
                            **kw).close()
        assert "no pg_hba.conf entry" in str(e.value) or "password" in str(e.value), e.value
    # The payments role still works with its password (what the API uses).
    dsn = (lab.state_dir / "services" / f"{lab.primary_region}.dsn").read_text().strip()
    with psycopg.connect(dsn, connect_timeout=3) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("payments",)


def test_another_local_user_cannot_reach_the_superuser(lab: Any) -> None:
    sock = lab.state_dir / "pg" / "run"
    st = sock.stat()
    assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid != 0
    port = str(lab.ports["pg_primary"])
    res = _as_nobody(str(sock), port, "postgres")  # the folder is closed to it
    assert res.returncode != 0 and "Permission denied" in res.stderr, res.stderr
    for user in ("postgres", "replication", "payments"):  # no trust, no password
        res = _as_nobody("127.0.0.1", port, user)
        assert res.returncode != 0 and ("no pg_hba.conf entry" in res.stderr or
                                        "password" in res.stderr), res.stderr
    # While the owner (root here) gets in through the socket folder: the refusal is not an
    # accident of a broken database.
    with lab.pg() as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                            ).fetchone() == (True,)


def test_haproxy_stats_only_on_a_private_socket(lab: Any) -> None:
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", lab.ports["stats"]), timeout=2).close()
    sock = lab.state_dir / "haproxy" / "stats.sock"
    st = sock.stat()
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0


def test_lab_status_says_what_each_component_accepts(lab: Any) -> None:
    res = CliRunner().invoke(app, ["lab", "status", "--json", "--plan", str(lab.plan_path)],
                             env=lab.env, catch_exceptions=False)
    data = json.loads(res.stdout)
    accepts = {c["kind"]: c["accepts"] for c in data["components"]}
    assert "peer" in accepts["postgres"] and "SCRAM" in accepts["postgres"]
    assert "bearer token" in accepts["payments"]
    assert "no stats page" in accepts["haproxy"] and "known limit" in accepts["aws"]
    text = CliRunner().invoke(app, ["lab", "status", "--plan", str(lab.plan_path)],
                              env=lab.env, catch_exceptions=False).stdout
    assert "accepts: payments: bearer token" in text


def test_lab_down_removes_no_folder_it_did_not_make(tmp_path: Path, lab: Any) -> None:
    # A state directory without the lab's marker (as DRKIT_LAB_DIR pointing at the wrong place
    # would be): `lab down` stops nothing of ours and removes nothing there.
    victim = tmp_path / "not-a-lab"
    for sub in ("pg/eu-west-1/data", "secrets", "haproxy", "aws"):
        (victim / sub).mkdir(parents=True)
        (victim / sub / "precious.txt").write_text("keep me\n")
    env = {**lab.env, "DRKIT_LAB_DIR": str(victim),
           "DRKIT_LAB_PORT_BASE": str(int(lab.env["DRKIT_LAB_PORT_BASE"]) + 60)}
    res = CliRunner().invoke(app, ["lab", "down", "--plan", str(lab.plan_path)], env=env,
                             catch_exceptions=False)
    assert "Traceback" not in res.output
    left = sorted(str(p.relative_to(victim)) for p in victim.rglob("precious.txt"))
    assert left == ["aws/precious.txt", "haproxy/precious.txt",
                    "pg/eu-west-1/data/precious.txt", "secrets/precious.txt"], (left,
                                                                                res.output)
    assert os.path.exists(lab.state_dir / ".drkit-lab"), "lab up marks its own state dir"
