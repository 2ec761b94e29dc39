"""Webhook notifications when a drill or runbook ends.

`send(urls, summary)` posts one JSON message to every URL of the plan's `notify:` list: a
Slack-compatible `text` line (Slack, Mattermost and Teams workflows show it) plus structured
fields for machines. Delivery is best effort by design: a dead endpoint, a timeout or a 5xx is
retried a bounded number of times, reported in the returned `Delivery`, logged, and never
raised, so a broken chat integration cannot change a drill's outcome or its exit code.

Webhook URLs carry their credentials in the path or query (Slack's /services/T.../B.../token):
only scheme://host[:port] ever appears in a result, a log line or an error message.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from drkit import __version__

log = logging.getLogger("drkit.notify")

SCHEMA = "drkit.notification/1"
# Status codes worth another attempt: the server may recover; any other 4xx will not.
_RETRY_STATUS = {408, 425, 429}


class DeliveryStatus(StrEnum):
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True)
class Delivery:
    target: str  # scheme://host[:port] only: the rest of a webhook URL is a secret
    status: DeliveryStatus
    attempts: int
    http_status: int | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == DeliveryStatus.DELIVERED

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "status": str(self.status), "attempts": self.attempts,
                "http_status": self.http_status, "error": self.error}


def redact_url(url: str) -> str:
    """'https://hooks.slack.com/services/T0/B0/xyz' -> 'https://hooks.slack.com'."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(invalid URL)"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{parts.scheme or '?'}://{host}{port}"


def _slack_escape(text: str) -> str:
    # Slack reads <...> as links and mentions (<!channel>): a name from the plan must not ping.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _mapping(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def _secs(v: Any) -> str:
    return "n/a" if not isinstance(v, int | float) or isinstance(v, bool) else f"{v:g}s"


def message(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body for a drill outcome (DrillOutcome.to_json()) or a runbook summary."""
    kind = "drill" if "scenario" in summary else "runbook"
    name = str(summary.get("scenario") or summary.get("runbook") or summary.get("name") or "?")
    env = str(summary.get("environment") or "?")
    verdict = str(summary.get("verdict") or "unknown")
    rto, rpo, ev = (_mapping(summary.get(k)) for k in ("rto", "rpo", "evidence"))
    evidence_id = ev.get("id") or summary.get("evidence_id")
    lost = rpo.get("lost_payments", summary.get("lost_payments"))
    parts = [f"drkit {kind} {name} on {env}: {verdict.upper()}"]
    if kind == "drill":
        parts.append(f"RTO {_secs(rto.get('actual_s'))} (target {_secs(rto.get('target_s'))})")
        parts.append(f"RPO {_secs(rpo.get('actual_s'))} (target {_secs(rpo.get('target_s'))})"
                     + (f", {lost} payments lost" if isinstance(lost, int) else ""))
    if evidence_id:
        parts.append(f"evidence {evidence_id}")
    return {
        "text": _slack_escape(" · ".join(parts)),
        "schema": SCHEMA,
        "kind": kind,
        "id": summary.get("id"),
        "name": name,
        "scenario": summary.get("scenario"),
        "environment": env,
        "verdict": verdict,
        "started_at": summary.get("started_at"),
        "ended_at": summary.get("ended_at"),
        "rto": {"target_s": rto.get("target_s"), "actual_s": rto.get("actual_s")},
        "rpo": {"target_s": rpo.get("target_s"), "actual_s": rpo.get("actual_s")},
        "lost_payments": lost,
        "evidence_id": evidence_id,
    }


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect would resend the body (and the URL's token) somewhere we were not told to go.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect())


def _post_once(url: str, body: bytes, timeout_s: float) -> tuple[int | None, str]:
    """(HTTP status, error text). Error text never contains the URL."""
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": f"drkit/{__version__}"})
    try:
        with _OPENER.open(req, timeout=timeout_s) as resp:
            resp.read(65536)
            return resp.status, ""
    except urllib.error.HTTPError as e:
        e.close()
        return e.code, f"HTTP {e.code}"
    except TimeoutError:
        return None, f"timed out after {timeout_s:g}s"
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, TimeoutError):
            return None, f"timed out after {timeout_s:g}s"
        text = getattr(reason, "strerror", None) or type(reason).__name__
        return None, f"connection failed: {text}"
    except (OSError, ValueError) as e:
        return None, f"connection failed: {getattr(e, 'strerror', None) or type(e).__name__}"


def deliver(url: str, body: bytes, *, attempts: int = 3, timeout_s: float = 5.0,
            backoff_s: float = 1.0) -> Delivery:
    """Post `body` to one URL with bounded retries. Never raises."""
    target = redact_url(url)
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        scheme = ""
    if scheme not in ("http", "https"):
        # urllib would also open file:// and ftp://: a webhook is HTTP(S) or nothing.
        d = Delivery(target, DeliveryStatus.FAILED, 0, None, "not an http(s) URL")
        log.warning("notify %s: %s", target, d.error)
        return d
    attempts = max(1, attempts)
    status: int | None = None
    error = ""
    for n in range(1, attempts + 1):
        status, error = _post_once(url, body, timeout_s)
        if status is not None and 200 <= status < 300:
            return Delivery(target, DeliveryStatus.DELIVERED, n, status)
        if status is not None and 300 <= status < 400:
            error = f"HTTP {status} redirect (not followed)"
        retryable = status is None or status >= 500 or status in _RETRY_STATUS
        log.warning("notify %s: attempt %d of %d failed: %s", target, n, attempts, error)
        if not retryable or n == attempts:
            return Delivery(target, DeliveryStatus.FAILED, n, status, error)
        time.sleep(backoff_s * 2 ** (n - 1))
    return Delivery(target, DeliveryStatus.FAILED, attempts, status, error)  # not reached


def send(urls: Sequence[str], summary: Mapping[str, Any], *, attempts: int = 3,
         timeout_s: float = 5.0, backoff_s: float = 1.0) -> list[Delivery]:
    """Post the summary to every URL, in parallel (a dead endpoint must not delay the others).

    Results are in the order of `urls`. Never raises for a delivery problem.
    """
    if not urls:
        return []
    body = json.dumps(message(summary), default=str).encode("utf-8")
    with ThreadPoolExecutor(max_workers=min(8, len(urls)),
                            thread_name_prefix="drkit-notify") as pool:
        return list(pool.map(lambda u: deliver(u, body, attempts=attempts, timeout_s=timeout_s,
                                                backoff_s=backoff_s), urls))


__all__ = ["Delivery", "DeliveryStatus", "deliver", "message", "redact_url", "send"]
