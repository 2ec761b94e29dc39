"""drkit.dr.healthz's module side (issue 19): on a host reached over SSH (the namespaces
topology) the action runs it once for every URL, where it ran ansible.builtin.uri per URL. Run
here as Ansible runs a module: a process given its arguments, answering JSON."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MODULE = (Path(__file__).resolve().parents[2] / "collections" / "ansible_collections" / "drkit"
          / "dr" / "plugins" / "modules" / "healthz.py")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200 if self.path == "/ok" else 503)
        self.end_headers()

    def log_message(self, *_a: object) -> None:
        pass


def test_every_url_answered_with_its_status_or_why_not(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    base = f"http://127.0.0.1:{server.server_address[1]}"
    urls = [f"{base}/ok", f"{base}/down", f"http://127.0.0.1:{closed}/healthz"]
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"urls": urls, "timeout": 2}}))
    try:
        proc = subprocess.run([sys.executable, str(MODULE), str(args)], capture_output=True,
                              text=True, timeout=60)
    finally:
        server.shutdown()
    out = json.loads(proc.stdout)
    assert proc.returncode == 0 and not out.get("failed"), out
    got = out["results"]
    assert [r["url"] for r in got] == urls  # in the order given
    assert [r["status"] for r in got] == [200, 503, None], got
    assert "msg" not in got[0] and got[1]["msg"] and got[2]["msg"], got
