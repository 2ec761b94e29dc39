"""Process, port, HTTP and HAProxy runtime-API helpers shared by drkit's modules.

Standard library only, and no Ansible imports: drkit's own Python code (`drkit.lab`, for the
fast `drkit lab status`) loads this very file too, so the modules and the CLI agree on what
"running" means.

Why pids are checked so carefully: in the lab's containers PID 1 does not reap orphans, so a
daemon that died stays a zombie whose pid still answers kill(pid, 0); and a pid in a stale
pidfile may belong to another program by now. Both count as "not running".
"""

from __future__ import annotations

import errno
import json
import os
import socket
import ssl
import time
import urllib.error
import urllib.request

# ---------------------------------------------------------------------------------------------
# processes


def read_pidfile(path):
    """The pid in `path` (first line), or None when missing or unreadable."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            first = f.readline().strip()
        pid = int(first)
        return pid if pid > 0 else None
    except (OSError, ValueError):
        return None


def proc_stat(pid):
    """(state letter, starttime ticks) from /proc/PID/stat, or None when the pid is gone."""
    try:
        with open("/proc/%d/stat" % pid, encoding="ascii", errors="replace") as f:
            data = f.read()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    rest = data[data.rfind(")") + 2:].split()
    if len(rest) < 20:
        return None
    return rest[0], int(rest[19])


def proc_cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def pid_alive(pid):
    """True when `pid` exists and is not a zombie (Z) or dead (X)."""
    if not pid:
        return False
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def _is_subsequence(needle, haystack):
    it = iter(haystack)
    return all(any(n == h for h in it) for n in needle)


def cmdline_matches(pid, argv):
    """True when process `pid` runs the program of `argv`.

    The program name must match (as argv[0] or, for scripts, the interpreter's first argument)
    and argv[1:] must appear in order: a script run through its shebang gains an interpreter in
    front, and HAProxy's master appends -sf/-x arguments when it re-executes on reload.
    """
    cmd = proc_cmdline(pid)
    if not cmd or not argv:
        return False
    prog = os.path.basename(argv[0])
    if os.path.basename(cmd[0]) != prog and not (
        len(cmd) > 1 and os.path.basename(cmd[1]) == prog
    ):
        return False
    return _is_subsequence([str(a) for a in argv[1:]], cmd[1:])


def pid_is(pid, argv=None, starttime=None):
    """Alive, and (when given) the same program and the same process start time."""
    if not pid_alive(pid):
        return False
    if starttime is not None:
        st = proc_stat(pid)
        if st is None or st[1] != int(starttime):
            return False
    if argv:
        return cmdline_matches(pid, argv)
    return True


def wait_dead(pid, timeout):
    """Wait until `pid` is gone or a zombie; True if it is within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.02)
    return not pid_alive(pid)


def process_name(pid):
    cmd = proc_cmdline(pid)
    if not cmd:
        try:
            with open("/proc/%d/comm" % pid, encoding="utf-8", errors="replace") as f:
                return f.read().strip()
        except OSError:
            return "?"
    names = [os.path.basename(c) for c in cmd[:3]]
    if names and names[0].startswith("python") and len(cmd) > 1:
        return " ".join(names[:3])
    return names[0]


# ---------------------------------------------------------------------------------------------
# ports


def port_open(port, host="127.0.0.1", timeout=0.3):
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def listening_ports():
    """{port: set(socket inodes)} of every LISTENing TCP socket, from /proc/net/tcp{,6}."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                next(f, None)
                for line in f:
                    parts = line.split()
                    if len(parts) < 10 or parts[3] != "0A":  # 0A = LISTEN
                        continue
                    port = int(parts[1].rsplit(":", 1)[1], 16)
                    found.setdefault(port, set()).add(parts[9])
        except OSError:
            continue
    return found


def socket_owners(inodes):
    """{inode: [pids]} for the given socket inodes, in one pass over /proc (root sees all)."""
    wanted = dict(("socket:[%s]" % i, i) for i in inodes)
    owners = dict((i, []) for i in inodes)
    if not wanted:
        return owners
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fd_dir = "/proc/%s/fd" % entry
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if link in wanted:
                owners[wanted[link]].append(int(entry))
    return owners


def _listening_inodes(port):
    return listening_ports().get(int(port), set())


def port_listening(port):
    """True when a socket is LISTENing on `port` (any address), per /proc/net/tcp{,6}."""
    return bool(_listening_inodes(port))


def port_owners(port):
    """Pids whose open files include a socket listening on `port` (needs root for others')."""
    inodes = _listening_inodes(port)
    if not inodes:
        return []
    wanted = set("socket:[%s]" % i for i in inodes)
    owners = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fd_dir = "/proc/%s/fd" % entry
        try:
            for fd in os.listdir(fd_dir):
                try:
                    if os.readlink(os.path.join(fd_dir, fd)) in wanted:
                        owners.append(int(entry))
                        break
                except OSError:
                    continue
        except OSError:
            continue
    return sorted(owners)


def wait_port(port, timeout, host="127.0.0.1", alive=None):
    """Wait until host:port accepts connections. `alive()` returning False aborts early."""
    deadline = time.monotonic() + timeout
    while True:
        if port_open(port, host, timeout=0.2):
            return True
        if alive is not None and not alive():
            return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def wait_port_free(port, timeout):
    deadline = time.monotonic() + timeout
    while port_listening(port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


# ---------------------------------------------------------------------------------------------
# HTTP


def http_get(url, timeout=1.0, cafile=None, server_hostname=None):
    """(status, body text) of GET `url`; status 0 with the error text when it cannot connect."""
    ctx = None
    if url.startswith("https:"):
        ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()
        if server_hostname is None and not cafile:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(url, headers={"Host": server_hostname} if server_hostname else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        try:
            body = e.read().decode("utf-8", "replace")
        except OSError:
            body = ""
        return e.code, body
    except (OSError, ValueError) as e:
        return 0, str(getattr(e, "reason", e))


def http_json(url, timeout=1.0, cafile=None):
    status, body = http_get(url, timeout=timeout, cafile=cafile)
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    return status, data


def wait_http(url, timeout, alive=None):
    """Wait until GET `url` answers 2xx. Returns (ok, last status, last body)."""
    deadline = time.monotonic() + timeout
    status, body = 0, ""
    while True:
        status, body = http_get(url, timeout=1.0)
        if 200 <= status < 300:
            return True, status, body
        if alive is not None and not alive():
            return False, status, body
        if time.monotonic() >= deadline:
            return False, status, body
        time.sleep(0.1)


# ---------------------------------------------------------------------------------------------
# moto, without boto3 (probes must be fast: importing boto3 costs more than the calls)


class MotoError(Exception):
    pass


def moto_call(endpoint, service, region, path="/", form=None, timeout=3.0):
    """One AWS API call to a moto server; returns the XML answer as an ElementTree element.

    moto reads service and region from the credential scope and does not check signatures.
    `form` makes it a query-protocol POST (CloudFormation); without it, a REST GET (Route53).
    """
    import urllib.parse
    import xml.etree.ElementTree as ET

    headers = {"Authorization": "AWS4-HMAC-SHA256 Credential=drkit-lab/20240101/%s/%s/"
               "aws4_request, SignedHeaders=host, Signature=0" % (region, service)}
    data = None
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    req = urllib.request.Request(endpoint.rstrip("/") + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
    except urllib.error.HTTPError as e:
        raise MotoError("%s %s: HTTP %d %s" % (service, path, e.code,
                                               e.read()[:200].decode("utf-8", "replace"))) from None
    except (OSError, ValueError) as e:
        raise MotoError("%s: %s" % (endpoint, getattr(e, "reason", e))) from None
    try:
        root = ET.fromstring(body)
    except ET.ParseError as e:
        raise MotoError("%s %s: not XML (%s)" % (service, path, e)) from None
    for el in root.iter():  # drop namespaces: find("Name") instead of find("{ns}Name")
        if "}" in el.tag:
            el.tag = el.tag.split("}", 1)[1]
    return root


# ---------------------------------------------------------------------------------------------
# HAProxy runtime API (unix socket, one command per connection)


class HaproxyError(Exception):
    pass


def haproxy_command(sock_path, command, timeout=2.0):
    """Send one runtime API command; return HAProxy's answer as text."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock_path)
        s.sendall(command.encode("utf-8") + b"\n")
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    except TimeoutError:
        raise HaproxyError(
            "%s: no answer to %r within %.1fs" % (sock_path, command, timeout)) from None
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ECONNREFUSED):
            raise HaproxyError(
                "%s: HAProxy is not running (%s)" % (sock_path, e.strerror)) from None
        raise HaproxyError("%s: %s" % (sock_path, e)) from None
    finally:
        s.close()
    return b"".join(chunks).decode("utf-8", "replace")


def haproxy_show_map(sock_path, map_file):
    """{key: value} of a map file loaded by HAProxy (`show map <file>`)."""
    out = haproxy_command(sock_path, "show map %s" % map_file)
    if "Unknown map identifier" in out or out.startswith("Missing"):
        raise HaproxyError("HAProxy has no map %s: %s" % (map_file, out.strip()))
    entries = {}
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0].startswith("0x"):
            entries[parts[1]] = parts[2]
    return entries


# srv_admin_state bits (include/haproxy/server-t.h): forced maintenance, forced drain, ...
_ADMIN_FMAINT = 0x01
_ADMIN_IMAINT = 0x02
_ADMIN_CMAINT = 0x04
_ADMIN_FDRAIN = 0x08
_ADMIN_IDRAIN = 0x10
_ADMIN_RMAINT = 0x20
_OP_STATES = {0: "DOWN", 1: "STARTING", 2: "UP", 3: "STOPPING"}


def haproxy_servers(sock_path, backend=None):
    """{backend: {server: {admin, op, addr, port}}} from `show servers state`.

    admin is ready | drain | maint (what `set server ... state` sets); op is UP/DOWN/...
    """
    out = haproxy_command(sock_path, "show servers state" + (" %s" % backend if backend else ""))
    if out.lstrip().startswith("Can't find backend"):
        raise HaproxyError("HAProxy has no backend %s" % backend)
    result = {}
    header = None
    for line in out.splitlines():
        if line.startswith("# be_id"):
            header = line[2:].split()
            continue
        if not line.strip() or line.startswith("#") or header is None:
            continue
        row = dict(zip(header, line.split(), strict=False))
        admin_bits = int(row.get("srv_admin_state", "0"))
        if admin_bits & (_ADMIN_FMAINT | _ADMIN_IMAINT | _ADMIN_CMAINT | _ADMIN_RMAINT):
            admin = "maint"
        elif admin_bits & (_ADMIN_FDRAIN | _ADMIN_IDRAIN):
            admin = "drain"
        else:
            admin = "ready"
        op = _OP_STATES.get(int(row.get("srv_op_state", "0")), "DOWN")
        result.setdefault(row.get("be_name", "?"), {})[row.get("srv_name", "?")] = {
            "admin": admin,
            "op": op,
            "addr": row.get("srv_addr", ""),
            "port": int(row.get("srv_port", "0") or 0),
        }
    return result


def write_atomic(path, text, mode=0o644):
    """Write `text` to `path` atomically (tmp, fsync, rename) with `mode`."""
    tmp = "%s.tmp.%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
