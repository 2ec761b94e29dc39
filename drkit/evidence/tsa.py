"""RFC 3161 time stamps on record hashes: proof from a third party that a record existed then.

At each seal drkit sends the record hash to the plan's time-stamping authority
(`evidence.tsa_url`) and keeps the whole TimeStampResp (DER, base64) in the record file as the
unsigned member `timestamp` (the token covers the hash, so it cannot be inside what is hashed).
The token is checked offline with openssl and the TSA's CA certificate:

    openssl ts -verify -digest <record hash> -in token.tsr -CAfile tsa-ca.pem

The request is built here (a few bytes of DER: version, SHA-256 message imprint, nonce,
certReq), the reply is only checked for its status; openssl verifies the token itself.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from drkit.errors import RunFailed

TIMEOUT_S = 10.0
_SHA256_ALG = bytes.fromhex("300d06096086480165030402010500")  # AlgorithmIdentifier sha256


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _int(value: int) -> bytes:
    raw = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")  # room for a sign bit
    return _der(0x02, raw)


def request(digest_hex: str, nonce: int) -> bytes:
    """A DER TimeStampReq for a SHA-256 digest, asking for the TSA's certificate."""
    imprint = _der(0x30, _SHA256_ALG + _der(0x04, bytes.fromhex(digest_hex)))
    return _der(0x30, _int(1) + imprint + _int(nonce) + bytes.fromhex("0101ff"))


def _read_len(data: bytes, i: int) -> tuple[int, int]:
    first = data[i]
    if first < 0x80:
        return first, i + 1
    n = first & 0x7F
    return int.from_bytes(data[i + 1:i + 1 + n], "big"), i + 1 + n


def status(resp: bytes) -> int:
    """PKIStatus of a TimeStampResp: 0 granted, 1 granted with mods, 2+ refused."""
    try:
        if resp[0] != 0x30:
            raise ValueError
        _, i = _read_len(resp, 1)
        if resp[i] != 0x30:
            raise ValueError
        _, i = _read_len(resp, i + 1)
        if resp[i] != 0x02:
            raise ValueError
        n, i = _read_len(resp, i + 1)
        return int.from_bytes(resp[i:i + n], "big")
    except (IndexError, ValueError):
        return -1


def timestamp(url: str, digest_hex: str, *, timeout: float = TIMEOUT_S) -> str:
    """The TSA's TimeStampResp for the digest, base64. Raises RunFailed."""
    body = request(digest_hex, secrets.randbits(63))
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/timestamp-query"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - plan's TSA URL
            resp = r.read(1024 * 1024)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise RunFailed(f"time-stamping authority {url}: {e}") from None
    st = status(resp)
    if st not in (0, 1):
        raise RunFailed(f"time-stamping authority {url} refused the request (status {st})")
    return base64.b64encode(resp).decode("ascii")


def verify(token_b64: str, digest_hex: str, ca_file: Path) -> str | None:
    """None when the token is a valid time stamp of the digest under the CA; else why not."""
    try:
        resp = base64.b64decode(token_b64, validate=True)
    except ValueError:
        return "the timestamp is not base64"
    fd, path = tempfile.mkstemp(suffix=".tsr")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(resp)
        try:
            out = subprocess.run(["openssl", "ts", "-verify", "-digest", digest_hex, "-in", path,
                                  "-CAfile", str(ca_file)], capture_output=True, text=True,
                                 timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"openssl could not check it: {e}"
        if out.returncode == 0 and "Verification: OK" in out.stdout:
            return None
        detail = (out.stderr or out.stdout).strip().splitlines()
        return "openssl ts -verify failed" + (f": {detail[-1][:160]}" if detail else "")
    finally:
        os.unlink(path)


def gen_time(token_b64: str) -> str | None:
    """The token's time (as openssl prints it), for reports."""
    fd, path = tempfile.mkstemp(suffix=".tsr")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64decode(token_b64))
        out = subprocess.run(["openssl", "ts", "-reply", "-in", path, "-text"],
                             capture_output=True, text=True, timeout=30, check=False)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None
    finally:
        os.unlink(path)
    for line in out.stdout.splitlines():
        if line.startswith("Time stamp:"):
            return line.split(":", 1)[1].strip()
    return None
