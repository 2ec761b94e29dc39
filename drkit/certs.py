"""TLS endpoint scan: which certificates of an environment expire within a window.

    report = check(plan, "lab", within_s=30 * 86400)
    report.expiring      # endpoints whose certificate expires within the window
    report.exit_code     # 0 all fine, 1 something expires (or could not be read)

The endpoints are the inventory's `drkit_tls_endpoints` ("host:port", or {host, port,
server_name}). Each certificate is read as a client sees it, over the network, without trusting
it first (an expired or self-signed certificate must still be reported); whether it chains to
the environment's CA is checked separately and reported as `trusted`.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from drkit.config import Plan
from drkit.errors import BadInput

VARIABLE = "drkit_tls_endpoints"


class CertStatus(StrEnum):
    OK = "ok"
    EXPIRING = "expiring"  # within the window
    EXPIRED = "expired"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    server_name: str | None = None

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class CertInfo:
    endpoint: Endpoint
    status: CertStatus
    subject: str = ""
    issuer: str = ""
    not_before: datetime | None = None
    not_after: datetime | None = None
    fingerprint_sha256: str = ""
    trusted: bool | None = None  # chains to the CA given (None: no CA to check against)
    error: str = ""

    def days_left(self, now: datetime) -> float | None:
        if self.not_after is None:
            return None
        return round((self.not_after - now).total_seconds() / 86400, 2)


@dataclass(frozen=True)
class CertReport:
    environment: str
    within_s: float
    checked_at: datetime
    certs: tuple[CertInfo, ...]

    @property
    def expiring(self) -> tuple[CertInfo, ...]:
        return tuple(c for c in self.certs if c.status != CertStatus.OK)

    @property
    def exit_code(self) -> int:
        return 1 if self.expiring else 0

    def to_json(self) -> dict[str, Any]:
        def ts(d: datetime | None) -> str | None:
            return d.isoformat().replace("+00:00", "Z") if d else None

        return {
            "environment": self.environment,
            "within_s": self.within_s,
            "checked_at": ts(self.checked_at),
            "expiring": [str(c.endpoint) for c in self.expiring],
            "certs": [{"endpoint": str(c.endpoint), "server_name": c.endpoint.server_name,
                       "status": str(c.status), "subject": c.subject, "issuer": c.issuer,
                       "not_before": ts(c.not_before), "not_after": ts(c.not_after),
                       "days_left": c.days_left(self.checked_at),
                       "fingerprint_sha256": c.fingerprint_sha256, "trusted": c.trusted,
                       "error": c.error} for c in self.certs],
        }


def parse_endpoints(value: Any, default_server_name: str | None = None) -> tuple[Endpoint, ...]:
    if value is None:
        return ()
    if isinstance(value, str | dict):
        value = [value]
    out = []
    for item in value:
        if isinstance(item, dict):
            host, port = item.get("host"), item.get("port", 443)
            name = item.get("server_name", default_server_name)
        else:
            host, sep, port = str(item).rpartition(":")
            if not sep:
                host, port = str(item), 443
            name = default_server_name
        try:
            out.append(Endpoint(str(host), int(port), str(name) if name else None))
        except (TypeError, ValueError):
            raise BadInput(f"{VARIABLE}: {item!r} is not host:port") from None
    return tuple(out)


def scan(endpoint: Endpoint, *, now: datetime, within_s: float, ca_file: str | None = None,
         timeout_s: float = 5.0) -> CertInfo:
    """Read the endpoint's certificate over TLS and judge its expiry."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # read it first, whatever it is; trust is judged below
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout_s) as s, \
                ctx.wrap_socket(s, server_hostname=endpoint.server_name or endpoint.host) as t:
            der = t.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as e:
        return CertInfo(endpoint, CertStatus.UNREACHABLE, error=str(e) or type(e).__name__)
    if not der:
        return CertInfo(endpoint, CertStatus.UNREACHABLE, error="no certificate presented")
    cert = x509.load_der_x509_certificate(der)
    not_after = cert.not_valid_after_utc
    left = (not_after - now).total_seconds()
    status = (CertStatus.EXPIRED if left <= 0 else
              CertStatus.EXPIRING if left <= within_s else CertStatus.OK)
    return CertInfo(
        endpoint, status, subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(), not_before=cert.not_valid_before_utc,
        not_after=not_after,
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(":"),
        trusted=_trusted(endpoint, ca_file, timeout_s) if ca_file else None,
    )


def _trusted(endpoint: Endpoint, ca_file: str, timeout_s: float) -> bool:
    """Does a client that trusts only `ca_file` accept the chain (name checks aside)?"""
    try:
        ctx = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError):
        return False
    ctx.check_hostname = False
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout_s) as s, \
                ctx.wrap_socket(s, server_hostname=endpoint.server_name or endpoint.host):
            return True
    except (OSError, ssl.SSLError):
        return False


def endpoints(plan: Plan, env_name: str) -> tuple[tuple[Endpoint, ...], str | None]:
    """The environment's TLS endpoints (from its inventory) and the CA file to check them."""
    from drkit import runbooks
    from drkit.targets import target

    tgt = target(plan, env_name)
    extra = dict(tgt.extravars)
    value = runbooks.inventory_value(tgt.inventory, VARIABLE, extra)
    if not value:
        raise BadInput(f"environment {env_name!r}: its inventory ({tgt.inventory}) defines no "
                       f"{VARIABLE} (a list of host:port): add it to group_vars/all.yml")
    name = runbooks.inventory_value(tgt.inventory, "drkit_hostname", extra)
    ca = tgt.ca_file or runbooks.inventory_value(tgt.inventory, "drkit_entry_ca_file", extra)
    return parse_endpoints(value, str(name) if name else None), (str(ca) if ca else None)


def check(plan: Plan, env_name: str, *, within_s: float | None = None,
          only: Sequence[Endpoint] = ()) -> CertReport:
    """Scan every TLS endpoint of `env_name`; expiring = not after within `within_s` (default:
    the plan's policy.cert_min_validity)."""
    from concurrent.futures import ThreadPoolExecutor

    window = float(within_s if within_s is not None else plan.model.policy.cert_min_validity)
    eps, ca = (tuple(only), None) if only else endpoints(plan, env_name)
    now = datetime.now(UTC)
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(eps)))) as pool:
        certs = list(pool.map(lambda e: scan(e, now=now, within_s=window, ca_file=ca), eps))
    return CertReport(env_name, window, now, tuple(certs))


__all__ = ["CertInfo", "CertReport", "CertStatus", "Endpoint", "check", "endpoints",
           "parse_endpoints", "scan"]
