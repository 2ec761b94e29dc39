#!/usr/bin/python
"""drkit.dr.haproxy: HAProxy's runtime API: map entries, server states, reloads, reads.

Why custom: community.general.haproxy sets server states only; the lab also needs map entries
written through to the map file, and master-socket reloads.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: haproxy
short_description: Change or read HAProxy through its runtime API (no reload, no socat)
description:
  - With O(map_file), O(key) and O(value), sets a map entry over the runtime API (C(set map),
    or C(add map) when the key is new) and rewrites the map file on disk atomically, so that a
    reload or restart keeps the change. No change when both already hold the value.
  - With O(backend), O(server) and O(server_state), sets the server's administrative state
    (C(set server BACKEND/SERVER state ready|drain|maint)).
  - With O(reload=true) and O(master_socket), reloads HAProxy through its master socket
    (a master-worker reload drops no connection).
  - With none of these, only reads the map's entries (when O(map_file) is given) and the
    servers' states. Always returns what it read after any change.
  - Talks to the unix sockets directly. Supports check mode.
options:
  socket:
    description: Path of the runtime API socket (stats socket ... level admin).
    type: path
    required: true
  map_file:
    description: Map file, as named in the HAProxy configuration.
    type: path
  key:
    description: Map key to set.
    type: str
  value:
    description: Value for O(key).
    type: str
  backend:
    description: Backend of O(server).
    type: str
  server:
    description: Server whose state to set.
    type: str
  server_state:
    description: Administrative state for O(server).
    type: str
    choices: [ready, drain, maint]
  master_socket:
    description: Path of the master CLI socket (C(haproxy -W -S PATH)), for O(reload).
    type: path
  reload:
    description: Reload HAProxy through O(master_socket).
    type: bool
    default: false
  timeout:
    description: Seconds to wait for each answer (and for a reload to finish).
    type: float
    default: 5
author: drkit maintainers (@drkit)
"""

EXAMPLES = r"""
- name: Send the payments traffic to the secondary region
  drkit.dr.haproxy:
    socket: "{{ drkit_lab_state_dir }}/haproxy/admin.sock"
    map_file: "{{ drkit_lab_state_dir }}/haproxy/active.map"
    key: active
    value: eu-central-1

- name: Drain instance 2 of the primary region before patching it
  drkit.dr.haproxy:
    socket: "{{ drkit_lab_state_dir }}/haproxy/admin.sock"
    backend: be_eu-west-1
    server: eu-west-1-2
    server_state: drain

- name: Read which region serves traffic now
  drkit.dr.haproxy:
    socket: "{{ drkit_lab_state_dir }}/haproxy/admin.sock"
    map_file: "{{ drkit_lab_state_dir }}/haproxy/active.map"
  register: drkit_haproxy_now
"""

RETURN = r"""
map:
  description: The map's entries after the task (when O(map_file) is given).
  returned: when map_file is given
  type: dict
value:
  description: The value of O(key) after the task (when O(key) is given).
  returned: when key is given
  type: str
previous:
  description: The value of O(key) (or the server's admin state) before the task.
  returned: when something was set
  type: str
servers:
  description: "{backend: {server: {admin: ready|drain|maint, op: UP|DOWN|..., addr, port}}}"
  returned: always
  type: dict
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.drkit.dr.plugins.module_utils.runtime import (
    HaproxyError,
    haproxy_command,
    haproxy_servers,
    haproxy_show_map,
    write_atomic,
)


def read_map_file(path):
    entries = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                parts = line.split(None, 1)
                entries[parts[0]] = parts[1] if len(parts) > 1 else ""
    except FileNotFoundError:
        pass
    return entries


def write_map_file(path, entries):
    text = "".join("%s %s\n" % (k, v) for k, v in entries.items())
    mode = 0o644
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        pass
    write_atomic(path, text, mode)


def expect_empty(answer, what):
    text = answer.strip()
    if text:
        raise HaproxyError("%s: HAProxy answered: %s" % (what, text.splitlines()[0]))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            socket=dict(type="path", required=True),
            map_file=dict(type="path"),
            key=dict(type="str", no_log=False),
            value=dict(type="str"),
            backend=dict(type="str"),
            server=dict(type="str"),
            server_state=dict(type="str", choices=["ready", "drain", "maint"]),
            master_socket=dict(type="path"),
            reload=dict(type="bool", default=False),
            timeout=dict(type="float", default=5.0),
        ),
        required_together=[("backend", "server", "server_state"), ("key", "value")],
        required_by={"key": "map_file"},
        required_if=[("reload", True, ["master_socket"])],
        supports_check_mode=True,
    )
    p = module.params
    sock, timeout = p["socket"], p["timeout"]
    result = dict(changed=False)
    try:
        if p["reload"]:
            result["changed"] = True
            if not module.check_mode:
                # The master answers when the new workers are ready (2.6: nothing, or a status).
                haproxy_command(p["master_socket"], "reload", timeout=timeout)
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    try:
                        haproxy_command(sock, "show info", timeout=1)
                        break
                    except HaproxyError:
                        time.sleep(0.05)

        if p["key"] is not None:
            live = haproxy_show_map(sock, p["map_file"])
            on_disk = read_map_file(p["map_file"])
            before = live.get(p["key"])
            result["previous"] = before
            if before != p["value"]:
                result["changed"] = True
                if not module.check_mode:
                    verb = "set" if p["key"] in live else "add"
                    expect_empty(haproxy_command(
                        sock, "%s map %s %s %s" % (verb, p["map_file"], p["key"], p["value"]),
                        timeout=timeout), "%s map" % verb)
            if on_disk.get(p["key"]) != p["value"]:
                result["changed"] = True
                if not module.check_mode:
                    on_disk[p["key"]] = p["value"]
                    write_map_file(p["map_file"], on_disk)

        if p["server"] is not None:
            servers = haproxy_servers(sock, p["backend"])
            srv = servers.get(p["backend"], {}).get(p["server"])
            if srv is None:
                module.fail_json(msg="HAProxy has no server %s/%s" % (p["backend"], p["server"]))
            result["previous"] = srv["admin"]
            if srv["admin"] != p["server_state"]:
                result["changed"] = True
                if not module.check_mode:
                    expect_empty(haproxy_command(
                        sock, "set server %s/%s state %s"
                        % (p["backend"], p["server"], p["server_state"]), timeout=timeout),
                        "set server")

        # What it is now (after any change).
        if p["map_file"]:
            if module.check_mode and p["key"] is not None:
                current = dict(haproxy_show_map(sock, p["map_file"]))
                current[p["key"]] = p["value"]
            else:
                current = haproxy_show_map(sock, p["map_file"])
            result["map"] = current
            if p["key"] is not None:
                result["value"] = current.get(p["key"])
        result["servers"] = haproxy_servers(sock)
        if module.check_mode and p["server"] is not None:
            # What it would be: check mode reports the state the task would set.
            result["servers"][p["backend"]][p["server"]]["admin"] = p["server_state"]
    except HaproxyError as e:
        module.fail_json(msg=str(e), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
