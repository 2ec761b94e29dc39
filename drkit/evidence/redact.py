"""Redaction: no secret reaches the evidence store, in records or in artifacts.

Rules (each redaction in a record names the rule that made it):

- `secret-key-name`: the value of any mapping key, variable or environment variable whose NAME
  contains password, passwd, token, secret, key, private or credential (case-insensitive) is
  replaced by "[REDACTED]", at any depth. In text, `NAME=value`, `NAME: value` and
  `"NAME": "value"` are matched the same way.
- `known-secret-value`: values the caller declares secret (e.g. the lab database password) are
  scrubbed wherever they appear. Values shorter than 4 characters are not scrubbed from text:
  they would destroy it without protecting anything.
- `pem-private-key`: PEM private key blocks in text.

Over-redaction is accepted (an `idempotency_key` is not secret, and is redacted): evidence
must never be the place a secret leaks from.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from drkit.evidence.record import REDACTED

RULE_KEY = "secret-key-name"
RULE_VALUE = "known-secret-value"
RULE_PEM = "pem-private-key"
RULES = (RULE_KEY, RULE_VALUE, RULE_PEM)

_WORDS = r"password|passwd|token|secret|key|private|credential"
SECRET_NAME = re.compile(_WORDS, re.IGNORECASE)
# NAME, then `=`, `:` or `": "` (JSON), then the value up to a delimiter. Already-redacted
# values are left alone so redaction is idempotent.
_TEXT_ASSIGN = re.compile(
    r"(?P<name>[A-Za-z0-9_.\-]*(?:" + _WORDS + r")[A-Za-z0-9_.\-]*)"
    r"(?P<sep>[\"']?\s*[:=]\s*[\"']?)"
    r"(?P<value>(?!\[REDACTED\])[^\s\"',;}&]+)",
    re.IGNORECASE,
)
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----",
                  re.DOTALL)
MIN_SECRET_LEN = 4


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name))


@dataclass
class Tally:
    """What a redaction pass did: counts per rule and the key names it redacted."""

    counts: Counter[str] = field(default_factory=Counter)
    keys: set[str] = field(default_factory=set)

    def merge(self, other: Tally) -> None:
        self.counts.update(other.counts)
        self.keys |= other.keys


def redact_text(text: str, secrets: Iterable[str] = (), tally: Tally | None = None) -> str:
    """Text with known secret values, `secret_name=value` pairs and PEM private keys scrubbed."""
    t = tally if tally is not None else Tally()
    for s in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LEN}, key=len,
                    reverse=True):
        n = text.count(s)
        if n:
            text = text.replace(s, REDACTED)
            t.counts[RULE_VALUE] += n

    def _pem(_m: re.Match[str]) -> str:
        t.counts[RULE_PEM] += 1
        return REDACTED

    # Each pattern only where its fixed part occurs: the assignment pattern tried at every
    # position of every string of a run's events was most of sealing's CPU (issue 13).
    if "PRIVATE KEY-----" in text:
        text = _PEM.sub(_pem, text)

    def _assign(m: re.Match[str]) -> str:
        t.counts[RULE_KEY] += 1
        t.keys.add(m.group("name"))
        return m.group("name") + m.group("sep") + REDACTED

    return _TEXT_ASSIGN.sub(_assign, text) if SECRET_NAME.search(text) else text


def redact_data(value: Any, secrets: Iterable[str] = (), tally: Tally | None = None) -> Any:
    """JSON-like data with secret-named keys' values and known secret values redacted."""
    t = tally if tally is not None else Tally()
    known = tuple(s for s in secrets if s)
    return _walk(value, known, t)


def _walk(value: Any, secrets: tuple[str, ...], t: Tally) -> Any:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            key = str(k)
            if is_secret_name(key) and v not in (None, "", REDACTED) and not isinstance(v, bool):
                out[key] = REDACTED
                t.counts[RULE_KEY] += 1
                t.keys.add(key)
            else:
                out[key] = _walk(v, secrets, t)
        return out
    if isinstance(value, list | tuple):
        return [_walk(v, secrets, t) for v in value]
    if isinstance(value, str):
        if value in secrets:
            t.counts[RULE_VALUE] += 1
            return REDACTED
        return redact_text(value, secrets, t)
    return value


def redact_jsonl(text: str, secrets: Iterable[str] = (), tally: Tally | None = None) -> str:
    """job_events.jsonl: each line parsed and redacted as data; unparsable lines as text."""
    t = tally if tally is not None else Tally()
    known = tuple(secrets)
    out = []
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            out.append(redact_text(line, known, t))
            continue
        out.append(json.dumps(redact_data(obj, known, t), ensure_ascii=False,
                              separators=(",", ":")))
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def env_secrets(env: Mapping[str, str]) -> list[str]:
    """Values of environment variables whose names look secret: scrub them from text too."""
    return [v for k, v in env.items() if is_secret_name(k) and len(v) >= MIN_SECRET_LEN]
