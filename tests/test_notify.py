"""Webhook notifications against a real HTTP server on 127.0.0.1.

Endpoints: one that accepts, a dead port, one slower than the timeout, one that fails with 500
once and then accepts, a 404 (not retried), and a redirect (not followed).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from drkit import notify
from drkit.notify import DeliveryStatus

TOKEN = "T0KEN-s3cr3t-xoxb"  # noqa: S105 - a fake webhook secret that must never leak

OUTCOME = {
    "id": "run-1", "scenario": "region-failover", "environment": "lab", "verdict": "fail",
    "started_at": "2025-03-01T02:00:00Z", "ended_at": "2025-03-01T02:03:00Z",
    "rto": {"target_s": 30.0, "actual_s": 42.5}, "rpo": {"target_s": 0.0, "actual_s": 1.25,
                                                          "lost_payments": 3},
    "findings": [], "evidence": {"id": "20250301T020000Z-ab12cd"},
}


class Hooks:
    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.bodies: list[tuple[str, str, dict]] = []
        self.lock = threading.Lock()
        self.slow_s = 1.0


@pytest.fixture
def server() -> Iterator[tuple[str, Hooks]]:
    hooks = Hooks()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            path = self.path.split("/")[1]
            with hooks.lock:
                hooks.hits[path] += 1
                n = hooks.hits[path]
            try:
                if path == "slow":
                    time.sleep(hooks.slow_s)
                if path == "flaky" and n == 1:
                    return self._reply(500)
                if path == "missing":
                    return self._reply(404)
                if path == "moved":
                    self.send_response(302)
                    self.send_header("Location", f"/ok/{TOKEN}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                with hooks.lock:
                    hooks.bodies.append((self.path, self.headers["Content-Type"],
                                         json.loads(body)))
                return self._reply(200)
            except (BrokenPipeError, ConnectionResetError):
                return None  # the client gave up (timeout): expected for /slow

        def _reply(self, code: int) -> None:
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", hooks
    finally:
        srv.shutdown()
        srv.server_close()


def _dead_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused
    return f"http://127.0.0.1:{port}/dead/{TOKEN}"


def test_deliveries_retry_report_and_never_raise(server: tuple[str, Hooks],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    base, hooks = server
    urls = [f"{base}/ok/{TOKEN}", _dead_url(), f"{base}/slow/{TOKEN}", f"{base}/flaky/{TOKEN}",
            f"{base}/missing/{TOKEN}", f"{base}/moved/{TOKEN}"]
    with caplog.at_level(logging.WARNING, logger="drkit.notify"):
        got = notify.send(urls, OUTCOME, attempts=3, timeout_s=0.3, backoff_s=0.01)

    ok, dead, slow, flaky, missing, moved = got
    assert (ok.status, ok.attempts, ok.http_status) == (DeliveryStatus.DELIVERED, 1, 200)
    assert (dead.status, dead.attempts) == (DeliveryStatus.FAILED, 3)
    assert dead.error.startswith("connection failed")
    assert (slow.status, slow.attempts, slow.error) == (DeliveryStatus.FAILED, 3,
                                                        "timed out after 0.3s")
    assert (flaky.status, flaky.attempts, flaky.http_status) == (DeliveryStatus.DELIVERED, 2,
                                                                 200)
    # A 404 will not get better by asking again; a redirect is never followed.
    assert (missing.status, missing.attempts, missing.http_status) == (DeliveryStatus.FAILED,
                                                                       1, 404)
    assert (moved.status, moved.attempts, moved.http_status) == (DeliveryStatus.FAILED, 1, 302)
    assert hooks.hits == Counter({"ok": 1, "slow": 3, "flaky": 2, "missing": 1, "moved": 1})
    assert [p for p, _, _ in hooks.bodies] == [f"/ok/{TOKEN}", f"/flaky/{TOKEN}"]

    # Only scheme://host:port is shown: never the path or query that holds the token.
    port = base.rsplit(":", 1)[1]
    assert ok.target == f"http://127.0.0.1:{port}"
    everything = repr(got) + json.dumps([d.to_json() for d in got]) + caplog.text
    assert TOKEN not in everything
    assert "/ok/" not in everything and "/dead/" not in everything
    assert "attempt 3 of 3 failed: timed out after 0.3s" in caplog.text


def test_the_message_is_slack_compatible_and_structured(server: tuple[str, Hooks]) -> None:
    base, hooks = server
    outcome = {**OUTCOME, "scenario": "<!channel> & co", "verdict": "pass"}
    (d,) = notify.send([f"{base}/ok/{TOKEN}?x=1"], outcome, attempts=1, timeout_s=2)
    assert d.ok
    (_, content_type, body) = hooks.bodies[0]
    assert content_type == "application/json"
    # Slack would turn <!channel> into a mention of everyone: escaped.
    assert body["text"] == ("drkit drill &lt;!channel&gt; &amp; co on lab: PASS · RTO 42.5s "
                            "(target 30s) · RPO 1.25s (target 0s), 3 payments lost · evidence "
                            "20250301T020000Z-ab12cd")
    assert body["verdict"] == "pass" and body["scenario"] == "<!channel> & co"
    assert body["environment"] == "lab"
    assert body["rto"] == {"target_s": 30.0, "actual_s": 42.5}
    assert body["rpo"] == {"target_s": 0.0, "actual_s": 1.25}
    assert body["lost_payments"] == 3
    assert body["evidence_id"] == "20250301T020000Z-ab12cd"
    assert body["schema"] == "drkit.notification/1" and body["kind"] == "drill"


def test_non_http_urls_are_refused_without_trying() -> None:
    got = notify.send([f"file:///etc/passwd?{TOKEN}", "not a url", f"ftp://h/{TOKEN}"], OUTCOME)
    assert [(d.status, d.attempts, d.error) for d in got] == [
        (DeliveryStatus.FAILED, 0, "not an http(s) URL")] * 3
    assert TOKEN not in repr(got)
    assert notify.send([], OUTCOME) == []


def test_redact_url() -> None:
    assert notify.redact_url(f"https://hooks.slack.com/services/T0/B0/{TOKEN}") == \
        "https://hooks.slack.com"
    assert notify.redact_url(f"https://user:{TOKEN}@example.org:8443/x?token={TOKEN}") == \
        "https://example.org:8443"
    assert notify.redact_url("http://[::1]:9/x") == "http://[::1]:9"
