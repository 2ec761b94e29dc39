"""PostgreSQL helpers shared by drkit's pg modules and `drkit.lab`'s status probes.

Standard library plus psycopg 3 (imported lazily: only the functions that query need it).
The lab's superuser and replication connections go over a unix socket in a directory only the
lab's OS user (and root) can enter, with peer authentication (issue 16): DRKIT_PG_HOST names
that directory (drkit.lab.envvars sets it); without it, connections go to 127.0.0.1.
"""

from __future__ import annotations

import os
import pwd
import shlex
import subprocess

from ansible_collections.drkit.dr.plugins.module_utils.runtime import pid_alive, proc_cmdline

DEFAULT_BIN_DIR = "/usr/lib/postgresql/15/bin"


class PgError(Exception):
    pass


def user_ids(os_user):
    try:
        pw = pwd.getpwnam(os_user)
    except KeyError:
        raise PgError("OS user %r does not exist (PostgreSQL must run as an unprivileged user)"
                      % os_user) from None
    return pw


def run_as(os_user, argv, timeout=120, env=None):
    """Run argv as `os_user` (switching only when we are root); return CompletedProcess."""
    pw = user_ids(os_user)
    kwargs = {}
    if os.geteuid() == 0 and pw.pw_uid != 0:
        kwargs.update(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
    full_env = {"PATH": "/usr/bin:/bin", "HOME": pw.pw_dir, "LANG": "C.UTF-8",
                "LC_ALL": "C.UTF-8", "PGCONNECT_TIMEOUT": "5"}
    if env:
        full_env.update(env)
    # The lab's marker (drkit.lab.LAB_ID_VAR): a postmaster pg_ctl starts carries it, as every
    # process the lab starts does, so `drkit lab down` finds it whatever its pid file says.
    if os.environ.get("DRKIT_LAB_ID"):
        full_env["DRKIT_LAB_ID"] = os.environ["DRKIT_LAB_ID"]
    try:
        return subprocess.run(argv, cwd="/", env=full_env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout, start_new_session=True, check=False, **kwargs)
    except subprocess.TimeoutExpired:
        raise PgError("%s timed out after %ss" % (os.path.basename(argv[0]), timeout)) from None
    except OSError as e:
        raise PgError("cannot run %s: %s" % (argv[0], e.strerror)) from None


def postmaster_pid(pgdata):
    """Pid of the postmaster serving `pgdata`, or None (stale postmaster.pid counts as none)."""
    try:
        with open(os.path.join(pgdata, "postmaster.pid"), encoding="ascii",
                  errors="replace") as f:
            pid = int(f.readline().strip())
    except (OSError, ValueError):
        return None
    if not pid_alive(pid):
        return None
    cmd = proc_cmdline(pid)
    # The postmaster keeps its argv (`postgres -D ...`); anything else means a recycled pid.
    if not cmd or "postgres" not in os.path.basename(cmd[0]):
        return None
    return pid


def postmaster_options(pgdata):
    """{name: value} of the -c settings the running postmaster was started with."""
    try:
        with open(os.path.join(pgdata, "postmaster.opts"), encoding="utf-8") as f:
            words = shlex.split(f.read())
    except (OSError, ValueError):
        return {}
    found = {}
    it = iter(words[1:])
    for w in it:
        if w == "-c":
            w = next(it, "")
        elif w.startswith("-c"):
            w = w[2:]
        else:
            continue
        if "=" in w:
            k, v = w.split("=", 1)
            found[k] = v
    return found


def is_initialized(pgdata):
    return os.path.isfile(os.path.join(pgdata, "PG_VERSION"))


def standby_signal(pgdata):
    return os.path.isfile(os.path.join(pgdata, "standby.signal"))


def setting_text(value):
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def default_host():
    """The socket directory of the lab's clusters (DRKIT_PG_HOST), else 127.0.0.1."""
    return os.environ.get("DRKIT_PG_HOST") or "127.0.0.1"


def connect(port, host=None, user="postgres", dbname="postgres", timeout=3, **kw):
    import psycopg

    host = host or default_host()
    try:
        return psycopg.connect(host=host, port=int(port), user=user, dbname=dbname,
                               connect_timeout=max(1, int(timeout)), autocommit=True,
                               application_name="drkit", **kw)
    except psycopg.Error as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PgError("cannot connect to PostgreSQL on %s:%s as %s: %s"
                      % (host, port, user, first)) from None


def query(port, sql, params=None, **kw):
    """Rows of one query, as dicts."""
    from psycopg.rows import dict_row

    conn = connect(port, **kw)
    try:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


PRIMARY_INFO_SQL = """
SELECT application_name, client_addr::text AS client_addr, state, sync_state,
       COALESCE(EXTRACT(EPOCH FROM replay_lag), 0)::float8 AS replay_lag_s,
       COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::bigint AS lag_bytes,
       sent_lsn::text AS sent_lsn, replay_lsn::text AS replay_lsn
  FROM pg_stat_replication ORDER BY application_name
"""

STANDBY_INFO_SQL = """
SELECT pg_last_xact_replay_timestamp() AS last_replay,
       EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8 AS replay_age_s,
       pg_last_wal_receive_lsn()::text AS receive_lsn,
       pg_last_wal_replay_lsn()::text AS replay_lsn,
       COALESCE(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)::bigint
         AS replay_pending_bytes,
       (SELECT status FROM pg_stat_wal_receiver) AS receiver_status,
       (SELECT sender_port FROM pg_stat_wal_receiver) AS sender_port,
       (SELECT EXTRACT(EPOCH FROM now() - last_msg_receipt_time)::float8
          FROM pg_stat_wal_receiver) AS last_msg_age_s
"""


def info(port, timeout=2, host=None, user="postgres"):
    """What a cluster is: reachable, in_recovery, replication rows or standby progress."""
    result = {"port": int(port), "reachable": False, "in_recovery": None, "replication": [],
              "standby": None, "error": None}
    try:
        conn = connect(port, host=host, user=user, timeout=timeout)
    except PgError as e:
        result["error"] = str(e)
        return result
    from psycopg.rows import dict_row

    try:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute("SELECT pg_is_in_recovery() AS r, current_setting('server_version') AS v")
            row = cur.fetchone()
            result.update(reachable=True, in_recovery=bool(row["r"]), server_version=row["v"])
            if row["r"]:
                cur.execute(STANDBY_INFO_SQL)
                sb = cur.fetchone()
                last = sb["last_replay"]
                sb["last_replay"] = last.isoformat() if last is not None else None
                # With no write on the primary there is nothing to replay: a streaming standby
                # that has replayed all it received is not lagging, however old its last replay.
                caught_up = sb["replay_pending_bytes"] == 0 and sb["receiver_status"] == "streaming"
                sb["lag_s"] = 0.0 if caught_up else sb["replay_age_s"]
                result["standby"] = sb
            else:
                cur.execute(PRIMARY_INFO_SQL)
                result["replication"] = cur.fetchall()
    except Exception as e:  # psycopg errors of any kind: report, do not crash a probe
        result["error"] = str(e).strip()
    finally:
        conn.close()
    return result
