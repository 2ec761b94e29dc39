"""Detached daemons tracked by pid files: the logic behind drkit_daemon and drkit_daemons.

A daemon is started in its own session with stdio to its log, so it outlives Ansible. Its pid
goes to PIDFILE and PIDFILE.meta records the process start time (from /proc/PID/stat): a pid
that is gone, a zombie, or recycled by another process is "not running".
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from ansible_collections.drkit.dr.plugins.module_utils.runtime import (
    http_get,
    pid_is,
    port_open,
    proc_stat,
    read_pidfile,
    wait_dead,
    write_atomic,
)


class DaemonError(Exception):
    def __init__(self, msg, pid=None):
        Exception.__init__(self, msg)
        self.pid = pid


def meta_path(pidfile):
    return pidfile + ".meta"


def read_meta(pidfile):
    try:
        with open(meta_path(pidfile), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def current_pid(pidfile, argv=None):
    """The pid recorded in `pidfile` if that process still runs, else None."""
    pid = read_pidfile(pidfile)
    if pid is None:
        return None
    meta = read_meta(pidfile)
    if meta.get("pid") == pid and meta.get("starttime") is not None:
        # Same pid and same start time: the very process we started, whatever argv says now.
        return pid if pid_is(pid, starttime=meta["starttime"]) else None
    # A pid file written by the program itself (no meta): trust it if it runs that program.
    return pid if pid_is(pid, argv=argv or None) else None


def forget(pidfile):
    for path in (pidfile, meta_path(pidfile)):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def log_tail(path, lines=5):
    if not path:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def stop(name, pid, sig=signal.SIGTERM, timeout=10.0):
    """Signal `pid` and wait until it is gone (or a zombie); SIGKILL after `timeout`."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    if wait_dead(pid, timeout):
        return
    if sig != signal.SIGKILL:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        if wait_dead(pid, 5):
            return
    raise DaemonError("%s: pid %d did not exit after SIGKILL" % (name, pid), pid=pid)


class Spawned:
    """A process we just started; wait_ready() checks it comes up."""

    def __init__(self, spec, proc):
        self.spec = spec
        self.proc = proc
        self.pid = proc.pid

    def exited(self):
        return self.proc.poll() is not None

    def _died(self, what):
        code = self.proc.poll()
        if code is not None:
            forget(self.spec["pidfile"])
            raise DaemonError("%s exited with code %s before %s; log %s: %s" % (
                self.spec["name"], code, what, self.spec.get("log"),
                log_tail(self.spec.get("log"))))


def spawn(spec):
    """Start spec's argv detached; record pid file and meta. Does not wait."""
    argv = [str(a) for a in spec["argv"]]
    for path in (spec["pidfile"], spec.get("log")):
        if path:
            parent = os.path.dirname(path)
            if parent and not os.path.isdir(parent):
                os.makedirs(parent, 0o755)
    env = dict(os.environ)
    env.update(dict((k, str(v)) for k, v in (spec.get("env") or {}).items()))
    kwargs = {}
    if spec.get("user"):
        import pwd

        pw = pwd.getpwnam(spec["user"])
        kwargs.update(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        env["HOME"] = pw.pw_dir
    log = open(spec["log"], "ab") if spec.get("log") else open(os.devnull, "wb")
    try:
        if spec.get("user") and spec.get("log"):
            os.chown(spec["log"], kwargs["user"], kwargs["group"])
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=spec.get("cwd") or "/",
            env=env,
            close_fds=True,
            start_new_session=True,  # its own session: it survives Ansible's exit and SIGHUP
            **kwargs
        )
    except OSError as e:
        raise DaemonError("%s: cannot run %s: %s" % (spec["name"], argv[0], e.strerror)) from None
    finally:
        log.close()
    st = proc_stat(proc.pid)
    meta = {"pid": proc.pid, "starttime": st[1] if st else None, "argv": argv,
            "started_at": time.time()}
    write_atomic(spec["pidfile"], "%d\n" % proc.pid)
    write_atomic(meta_path(spec["pidfile"]), json.dumps(meta) + "\n")
    return Spawned(spec, proc)


def ready(spec, pid, spawned=None):
    """True when the daemon answers (wait_tcp port / wait_http URL); raises if it died."""
    if spawned is not None:
        spawned._died("it was ready")
    elif pid is None or not pid_is(pid):
        raise DaemonError("%s (pid %s) is not running" % (spec["name"], pid))
    if spec.get("wait_tcp") and not port_open(spec["wait_tcp"], timeout=0.2):
        return False
    if spec.get("wait_http"):
        status, _body = http_get(spec["wait_http"], timeout=1.0)
        if not 200 <= status < 300:
            return False
    return True


def wait_all(items, timeout):
    """Wait until every (spec, pid, spawned) is ready; raise naming the first that is not."""
    deadline = time.monotonic() + timeout
    pending = list(items)
    while pending:
        pending = [it for it in pending if not ready(*it)]
        if not pending:
            return
        if time.monotonic() > deadline:
            spec, pid, _sp = pending[0]
            what = ("listening on 127.0.0.1:%s" % spec["wait_tcp"]) if spec.get("wait_tcp") \
                else ("answering %s" % spec.get("wait_http"))
            raise DaemonError("%s (pid %s) is not %s after %gs; log %s: %s" % (
                spec["name"], pid, what, timeout, spec.get("log"), log_tail(spec.get("log"))),
                pid=pid)
        time.sleep(0.05)
