#!/usr/bin/python
"""drkit.dr.pg: one PostgreSQL cluster's lifecycle (running, stopped, crashed, promoted, standby).

Why custom: community.postgresql manages objects inside a running server, not a cluster's
lifecycle (pg_ctl start/stop/promote, crash, rebuild as standby).
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: pg
short_description: Manage one PostgreSQL cluster of the lab (or any host) with pg_ctl
description:
  - Creates (initdb), starts, stops, crashes, promotes or rebuilds as a streaming standby one
    PostgreSQL cluster, run as an unprivileged OS user.
  - Per-cluster settings are passed on the command line (C(-c name=value)), never written into the
    data directory, because pg_basebackup copies the data directory's configuration and a
    failback rebuilds clusters in both directions.
  - A running cluster whose command-line settings differ from O(options) is restarted.
  - Idempotent; supports check mode.
options:
  pgdata:
    description: Data directory.
    type: path
    required: true
  port:
    description: TCP port on 127.0.0.1 (passed as C(-c port=)).
    type: int
    required: true
  os_user:
    description: OS user that owns the data directory and runs the server.
    type: str
    default: postgres
  bin_dir:
    description: Directory holding initdb, pg_ctl, pg_basebackup.
    type: path
    default: /usr/lib/postgresql/15/bin
  log:
    description: Server log file (pg_ctl -l). Defaults to PGDATA/../postgresql.log.
    type: path
  options:
    description: Settings passed with C(-c) (for example listen_addresses, hba_file).
    type: dict
    default: {}
  hba_file:
    description: Path of a pg_hba.conf outside the data directory; written from O(hba) when
      given, and passed as C(-c hba_file=).
    type: path
  hba:
    description: Lines of O(hba_file).
    type: list
    elements: str
  ident_file:
    description: Path of a pg_ident.conf outside the data directory; written from O(ident)
      when given, and passed as C(-c ident_file=).
    type: path
  ident:
    description: Lines of O(ident_file) (user name maps for peer authentication).
    type: list
    elements: str
  initdb_args:
    description: Extra initdb arguments, used when O(pgdata) is empty and the cluster must exist.
    type: list
    elements: str
    default: [--encoding=UTF8, --no-locale, --username=postgres, --auth=trust]
  primary_port:
    description: Port of the primary on O(primary_host) (O(state=standby)).
    type: int
  primary_host:
    description: Host or socket directory of the primary (O(state=standby)). Default
      C(DRKIT_PG_HOST) (the lab's socket directory), else 127.0.0.1.
    type: str
  replication_user:
    description: Role the standby connects as (O(state=standby)).
    type: str
    default: replication
  application_name:
    description: The standby's application_name on the primary, which synchronous_standby_names
      can name. Defaults to the name of the directory above O(pgdata).
    type: str
  timeout:
    description: Seconds to wait for start, stop, promotion and streaming.
    type: int
    default: 60
  state:
    description:
      - V(running) creates the cluster if O(pgdata) is empty and starts it.
      - V(stopped) stops it (fast shutdown). V(crashed) stops it with C(pg_ctl stop -m immediate),
        as if its region were lost. V(absent) stops it and deletes O(pgdata).
      - V(promoted) starts it if needed and promotes it if it is in recovery (no-op on a primary).
      - V(standby) makes it a streaming standby of O(primary_port); no change when it already is
        one and streams from it. A cluster that was shut down cleanly (a switchover, where the new
        primary received every record it wrote before being promoted) first follows the primary
        as it is, with no copy, when PostgreSQL accepts its history (it refuses a diverged
        timeline); otherwise stop, wipe, C(pg_basebackup -R), start, and wait until it streams.
    type: str
    choices: [running, stopped, crashed, promoted, standby, absent]
    default: running
author: drkit maintainers (@drkit)
"""

EXAMPLES = r"""
- name: Promote the secondary region's standby
  drkit.dr.pg:
    pgdata: /var/tmp/drkit-lab/pg/eu-central-1/data
    port: 17403
    options: "{{ drkit_lab_pg_options }}"
    state: promoted

- name: Rebuild the old primary as a standby of the new one
  drkit.dr.pg:
    pgdata: /var/tmp/drkit-lab/pg/eu-west-1/data
    port: 17402
    options: "{{ drkit_lab_pg_options }}"
    primary_port: 17403
    state: standby
"""

RETURN = r"""
in_recovery:
  description: Whether the cluster is a standby (in recovery) after the task; null when stopped.
  returned: always
  type: bool
pid:
  description: Postmaster pid after the task, or null.
  returned: always
  type: int
actions:
  description: What was done, in order (initdb, start, restart, stop, promote, follow,
    follow-refused, basebackup, ...).
  returned: always
  type: list
  elements: str
"""

import os
import shlex
import shutil
import sys
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.drkit.dr.plugins.module_utils.pgutil import (
    PgError,
    default_host,
    is_initialized,
    postmaster_options,
    postmaster_pid,
    query,
    run_as,
    setting_text,
    standby_signal,
    user_ids,
)
from ansible_collections.drkit.dr.plugins.module_utils.runtime import wait_port_free, write_atomic


class Cluster:
    def __init__(self, module):
        self.m = module
        p = module.params
        self.p = p
        self.pgdata = p["pgdata"].rstrip("/")
        self.bin = p["bin_dir"]
        self.user = p["os_user"]
        self.log = p["log"] or os.path.join(os.path.dirname(self.pgdata), "postgresql.log")
        self.actions = []
        self.check = module.check_mode
        opts = {"port": p["port"]}
        opts.update(p["options"] or {})
        if p["hba_file"]:
            opts["hba_file"] = p["hba_file"]
        if p["ident_file"]:
            opts["ident_file"] = p["ident_file"]
        self.options = {k: setting_text(v) for k, v in opts.items()}

    # ---- helpers
    def fail(self, msg, **kw):
        self.m.fail_json(msg="%s: %s" % (self.pgdata, msg), actions=self.actions, **kw)

    def tool(self, name):
        path = os.path.join(self.bin, name)
        if not os.access(path, os.X_OK):
            self.fail("%s not found in %s (install postgresql-15: run scripts/install)"
                      % (name, self.bin))
        return path

    def run(self, argv, what, timeout=None):
        try:
            res = run_as(self.user, argv, timeout=timeout or self.p["timeout"] + 30)
        except PgError as e:
            self.fail(str(e))
        if res.returncode != 0:
            out = res.stdout.decode("utf-8", "replace").strip().splitlines()
            self.fail("%s failed (exit %d): %s; server log %s" % (
                what, res.returncode, " | ".join(out[-4:]), self.log))
        return res

    def pid(self):
        return postmaster_pid(self.pgdata)

    def opts_string(self, extra=None):
        opts = dict(extra or {}, **self.options)  # the task's own settings win
        return " ".join("-c %s" % shlex.quote("%s=%s" % (k, v))
                        for k, v in sorted(opts.items()))

    def prepare_dirs(self):
        self.socket_dirs()
        pw = user_ids(self.user)
        parent = os.path.dirname(self.pgdata)
        if not os.path.isdir(parent):
            os.makedirs(parent, 0o755)
        if not os.path.isdir(self.pgdata):
            os.mkdir(self.pgdata, 0o700)
        os.chown(self.pgdata, pw.pw_uid, pw.pw_gid)
        os.chmod(self.pgdata, 0o700)
        log_dir = os.path.dirname(self.log)
        if not os.path.isdir(log_dir):
            os.makedirs(log_dir, 0o755)
        if not os.path.exists(self.log):
            open(self.log, "a").close()
        os.chown(self.log, pw.pw_uid, pw.pw_gid)
        os.chmod(self.log, 0o640)

    def write_hba(self):
        """Write the external pg_hba.conf and pg_ident.conf; True when one changed (a running
        server reloads)."""
        changed = self._write_conf(self.p["hba_file"], self.p["hba"], "hba")
        return self._write_conf(self.p["ident_file"], self.p["ident"], "ident") or changed

    def socket_dirs(self):
        """unix_socket_directories, each made and kept mode 0700, owned by the OS user: only
        that user and root can connect through them (peer authentication, issue 16)."""
        pw = user_ids(self.user)
        for d in [x.strip() for x in self.options.get("unix_socket_directories", "").split(",")]:
            if not d or self.check:
                continue
            if not os.path.isdir(d):
                os.makedirs(d, 0o700)
            os.chown(d, pw.pw_uid, pw.pw_gid)
            os.chmod(d, 0o700)

    def _write_conf(self, path, lines, what):
        if not path or lines is None:
            return False
        text = "# Written by drkit_pg; edits are overwritten.\n" + "\n".join(lines) + "\n"
        try:
            with open(path, encoding="utf-8") as f:
                if f.read() == text:
                    return False
        except OSError:
            pass
        if not self.check:
            pw = user_ids(self.user)
            parent = os.path.dirname(path)
            if not os.path.isdir(parent):
                os.makedirs(parent, 0o755)
            write_atomic(path, text, 0o640)
            os.chown(path, 0, pw.pw_gid)
        self.actions.append(what)
        return True

    # ---- operations
    def initdb(self):
        self.actions.append("initdb")
        if self.check:
            return
        self.prepare_dirs()
        if os.listdir(self.pgdata):
            self.fail("is not empty but holds no cluster (no PG_VERSION): remove it, or run "
                      "`drkit lab down`")
        self.run([self.tool("initdb"), "-D", self.pgdata, "--no-sync"]
                 + list(self.p["initdb_args"]), "initdb")

    def start(self, extra=None):
        self.actions.append("start")
        if self.check:
            return
        self.prepare_dirs()
        # A postmaster.pid whose pid is dead (or recycled) would make the start fail.
        lock = os.path.join(self.pgdata, "postmaster.pid")
        if os.path.exists(lock) and self.pid() is None:
            os.unlink(lock)
        if not wait_port_free(self.p["port"], 10):
            self.fail("port %d is in use by another process" % self.p["port"])
        self.run([self.tool("pg_ctl"), "start", "-D", self.pgdata, "-l", self.log, "-w",
                  "-t", str(self.p["timeout"]), "-o", self.opts_string(extra)], "pg_ctl start")

    def stop(self, mode):
        self.actions.append("stop-" + mode)
        if self.check:
            return
        self.run([self.tool("pg_ctl"), "stop", "-D", self.pgdata, "-m", mode, "-w",
                  "-t", str(self.p["timeout"])], "pg_ctl stop -m " + mode)
        wait_port_free(self.p["port"], 10)

    def ensure_running(self):
        """Start (after initdb when needed); restart when the settings differ."""
        hba_changed = self.write_hba()
        pid = self.pid()
        if pid is None:
            if not is_initialized(self.pgdata):
                self.initdb()
            self.start()
            return
        running = postmaster_options(self.pgdata)
        if any(running.get(k) != v for k, v in self.options.items()):
            self.actions.append("restart")
            if not self.check:
                self.socket_dirs()
                self.run([self.tool("pg_ctl"), "restart", "-D", self.pgdata, "-l", self.log,
                          "-m", "fast", "-w", "-t", str(self.p["timeout"]),
                          "-o", self.opts_string()], "pg_ctl restart")
        elif hba_changed and not self.check:
            self.run([self.tool("pg_ctl"), "reload", "-D", self.pgdata], "pg_ctl reload")

    def streaming_from(self, primary_port):
        """True when this running standby streams from primary_port (waits a little)."""
        deadline = time.monotonic() + min(10, self.p["timeout"])
        while True:
            try:
                rows = query(self.p["port"], "SELECT status, sender_port FROM pg_stat_wal_receiver")
            except PgError:
                rows = []
            if rows and rows[0]["status"] == "streaming":
                return rows[0]["sender_port"] == primary_port
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)

    def wait_streaming(self, primary_port):
        deadline = time.monotonic() + self.p["timeout"]
        last = None
        while time.monotonic() < deadline:
            try:
                rows = query(self.p["port"],
                             "SELECT status, sender_port FROM pg_stat_wal_receiver")
                last = rows[0] if rows else None
            except PgError as e:
                last = str(e)
            if isinstance(last, dict) and last["status"] == "streaming":
                return
            time.sleep(0.1)
        self.fail("the standby does not stream from port %d after %ds (last: %s)"
                  % (primary_port, self.p["timeout"], last))

    def conninfo_port(self):
        try:
            with open(os.path.join(self.pgdata, "postgresql.auto.conf"),
                      encoding="utf-8") as f:
                for line in f:
                    if line.strip().startswith("primary_conninfo"):
                        for word in shlex.split(line.split("=", 1)[1].strip().strip("'")):
                            if word.startswith("port="):
                                return int(word[5:])
        except (OSError, ValueError):
            return None
        return None

    def shut_down_cleanly(self):
        """True when pg_control says the cluster was shut down cleanly as a primary (its
        shutdown checkpoint is the last record it wrote), the state a switchover leaves."""
        if self.pid() is not None or not is_initialized(self.pgdata):
            return False
        res = self.run([self.tool("pg_controldata"), "-D", self.pgdata], "pg_controldata")
        for line in res.stdout.decode("utf-8", "replace").splitlines():
            if line.startswith("Database cluster state:"):
                return line.split(":", 1)[1].strip() == "shut down"
        return False

    def newest_timeline(self):
        """The newest timeline whose history file is in pg_wal (fetched from the primary)."""
        try:
            names = os.listdir(os.path.join(self.pgdata, "pg_wal"))
        except OSError:
            return 0
        return max([int(n[:8], 16) for n in names
                    if n.endswith(".history") and len(n) == 16] or [0])

    def follow(self):
        """Start a cleanly shut down former primary as a standby of primary_port, as it is.
        True once it streams. PostgreSQL checks the histories itself: the primary refuses a
        start point that is not in its history and the standby a timeline that forked before
        its last record, so a cluster that wrote anything the primary never received cannot
        stream; that (seen in its log) or no streaming in 10 s sends it back to the copy."""
        p = self.p
        self.actions.append("follow")
        if self.check:
            return True
        app = p["application_name"] or os.path.basename(os.path.dirname(self.pgdata))
        conninfo = "user=%s host=%s port=%d application_name=%s" % (
            p["replication_user"], p["primary_host"] or default_host(), p["primary_port"], app)
        auto = os.path.join(self.pgdata, "postgresql.auto.conf")
        try:
            with open(auto, encoding="utf-8") as f:
                lines = [x for x in f.read().splitlines()
                         if not x.strip().startswith("primary_conninfo")]
        except OSError:
            lines = []
        lines.append("primary_conninfo = '%s'" % conninfo.replace("'", "''"))
        pw = user_ids(self.user)
        write_atomic(auto, "\n".join(lines) + "\n", 0o600)
        os.chown(auto, pw.pw_uid, pw.pw_gid)
        signal_file = os.path.join(self.pgdata, "standby.signal")
        open(signal_file, "w").close()
        os.chown(signal_file, pw.pw_uid, pw.pw_gid)
        try:
            log_from = os.path.getsize(self.log)
        except OSError:
            log_from = 0
        self.start()
        deadline = time.monotonic() + min(10, p["timeout"])
        refused = ("not in this server's history", "forked off current database system",
                   "is not a child of this server's history")
        while time.monotonic() < deadline:
            try:
                rows = query(p["port"], "SELECT status, sender_port, received_tli"
                                        " FROM pg_stat_wal_receiver")
            except PgError:
                rows = []
            # Streaming alone is not enough: the walreceiver starts at the beginning of a WAL
            # segment, so a cluster that diverged within its last segment still streams the old
            # timeline up to the switch, and is refused only when it should follow the new one.
            # It follows once it receives the primary's timeline (the newest history file the
            # walreceiver fetched before it started streaming).
            if (rows and rows[0]["status"] == "streaming"
                    and rows[0]["sender_port"] == p["primary_port"]
                    and (rows[0]["received_tli"] or 0) >= self.newest_timeline()):
                return True
            try:
                with open(self.log, encoding="utf-8", errors="replace") as f:
                    f.seek(log_from)
                    said = f.read()
                if any(r in said for r in refused):
                    break
            except OSError:
                pass
            time.sleep(0.05)
        self.actions.append("follow-refused")
        return False

    def discard_aside(self):
        """Move the old data directory aside and delete it in a process of its own: deleting
        tens of megabytes of WAL takes 0.5-1.5 s on a loaded disk (ext4 with discard), time the
        copy does not need to wait for (issue 19). Leftovers of an earlier rebuild whose
        deleting process did not finish go with it."""
        parent, name = os.path.split(self.pgdata)
        aside = os.path.join(parent, "%s.drkit-old-%d-%d" % (name, os.getpid(), time.time_ns()))
        os.rename(self.pgdata, aside)
        doomed = [os.path.join(parent, x) for x in os.listdir(parent)
                  if x.startswith(name + ".drkit-old-")]
        # sh returns at once; rm goes on in the background, its output going nowhere.
        rc, _out, _err = self.m.run_command(
            ["sh", "-c", 'rm -rf --one-file-system -- "$@" </dev/null >/dev/null 2>&1 &',
             "drkit-discard"] + doomed, cwd="/")
        if rc != 0:
            shutil.rmtree(aside, ignore_errors=True)

    def basebackup(self):
        p = self.p
        self.actions.append("basebackup")
        if self.check:
            return
        if self.pid() is not None:
            self.stop("immediate")
        if os.path.isdir(self.pgdata):
            self.discard_aside()
        self.prepare_dirs()
        app = p["application_name"] or os.path.basename(os.path.dirname(self.pgdata))
        conn = "host=%s port=%d user=%s application_name=%s" % (
            p["primary_host"] or default_host(), p["primary_port"], p["replication_user"], app)
        self.run([self.tool("pg_basebackup"), "-D", self.pgdata, "-d", conn, "-R",
                  "-X", "stream", "-c", "fast", "--no-sync"], "pg_basebackup")

    def ensure_standby(self):
        p = self.p
        if not p["primary_port"]:
            self.fail("state=standby needs primary_port")
        self.write_hba()
        if p["primary_port"] == p["port"]:
            self.fail("primary_port is this cluster's own port")
        pid = self.pid()
        if (is_initialized(self.pgdata) and standby_signal(self.pgdata)
                and self.conninfo_port() == p["primary_port"]):
            if pid is None:
                self.start()
                pid = -1
            if self.check:
                return
            if self.streaming_from(p["primary_port"]):
                running = postmaster_options(self.pgdata)
                if any(running.get(k) != v for k, v in self.options.items()):
                    self.ensure_running()  # restart with the new settings
                    self.wait_streaming(p["primary_port"])
                return
        # A switchover's former primary, shut down cleanly, follows as it is (no copy).
        if self.shut_down_cleanly() and self.follow():
            return
        # Not a standby of that primary (or it cannot stream, e.g. a diverged timeline).
        self.basebackup()
        # The copy was written without fsync (--no-sync); its first start syncs the whole data
        # directory. One syncfs() instead of an fsync per file (about 1,300 files): 0.8 s less
        # under load (issue 19). Linux only; a setting the task passes wins.
        self.start({"recovery_init_sync_method": "syncfs"} if sys.platform.startswith("linux")
                   else None)
        if not self.check:
            self.wait_streaming(p["primary_port"])


def main():
    module = AnsibleModule(
        argument_spec=dict(
            pgdata=dict(type="path", required=True),
            port=dict(type="int", required=True),
            os_user=dict(type="str", default="postgres"),
            bin_dir=dict(type="path", default="/usr/lib/postgresql/15/bin"),
            log=dict(type="path"),
            options=dict(type="dict", default={}),
            hba_file=dict(type="path"),
            hba=dict(type="list", elements="str"),
            ident_file=dict(type="path"),
            ident=dict(type="list", elements="str"),
            initdb_args=dict(type="list", elements="str",
                             default=["--encoding=UTF8", "--no-locale", "--username=postgres",
                                      "--auth=trust"]),
            primary_port=dict(type="int"),
            primary_host=dict(type="str"),
            replication_user=dict(type="str", default="replication"),
            application_name=dict(type="str"),
            timeout=dict(type="int", default=60),
            state=dict(type="str", default="running",
                       choices=["running", "stopped", "crashed", "promoted", "standby",
                                "absent"]),
        ),
        supports_check_mode=True,
    )
    c = Cluster(module)
    state = module.params["state"]
    try:
        if state == "running":
            c.ensure_running()
        elif state in ("stopped", "crashed"):
            if c.pid() is not None:
                c.stop("fast" if state == "stopped" else "immediate")
        elif state == "absent":
            if c.pid() is not None:
                c.stop("immediate")
            if os.path.exists(c.pgdata) and not is_initialized(c.pgdata) and os.listdir(c.pgdata):
                # Remove only a PostgreSQL data directory (issue 16), never a folder a plan or a
                # link pointed here.
                c.fail("is not a PostgreSQL data directory (no PG_VERSION): not removed")
            if os.path.exists(c.pgdata):
                c.actions.append("remove")
                if not module.check_mode:
                    shutil.rmtree(c.pgdata)
        elif state == "promoted":
            if not is_initialized(c.pgdata):
                c.fail("holds no cluster to promote")
            c.ensure_running()
            if standby_signal(c.pgdata):
                c.actions.append("promote")
                if not module.check_mode:
                    c.run([c.tool("pg_ctl"), "promote", "-D", c.pgdata, "-w",
                           "-t", str(module.params["timeout"])], "pg_ctl promote")
        elif state == "standby":
            c.ensure_standby()
    except PgError as e:
        c.fail(str(e))

    pid = c.pid()
    in_recovery = None
    if pid is not None:
        in_recovery = standby_signal(c.pgdata)
    module.exit_json(changed=bool(c.actions), actions=c.actions, pid=pid,
                     in_recovery=in_recovery, pgdata=c.pgdata, port=module.params["port"])


if __name__ == "__main__":
    main()
