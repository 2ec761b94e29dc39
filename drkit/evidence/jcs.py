"""RFC 8785 JSON Canonicalization Scheme (JCS), and a strict JSON reader.

`canonicalize(value)` gives the RFC 8785 bytes of a JSON value: object members sorted by the
UTF-16 code units of their names, no whitespace, strings escaped as ECMAScript's
JSON.stringify does, and numbers written as ECMAScript's Number.prototype.toString writes an
IEEE-754 double (RFC 8785 section 3.2.2.3). Python's `repr(float)` already gives the shortest
digits that round-trip, which are the digits ECMAScript chooses; only the layout (where the
decimal point goes, when an exponent is used) differs, and `number()` applies ECMAScript's.

Tested against RFC 8785's examples and the reference number test file (its published SHA-256
over the first 100,000 generated numbers): tests/evidence/test_evidence_jcs.py.

`loads_strict(data)` parses JSON and refuses what a canonical record can never contain and an
attacker could use: duplicate member names (`"verdict":"fail","verdict":"pass"`: which one a
tool keeps differs between tools) and non-finite numbers (NaN, Infinity, or 1e400, which
Python would read as infinity).

The same code is copied into the stand-alone auditor script `drkit-verify` (it may use only
the standard library); a test checks that the two copies agree.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_SAFE_INTEGER = 2**53  # integers beyond this are not exact IEEE-754 doubles


class JcsError(ValueError):
    """A value that has no RFC 8785 form (NaN, infinity, a lone surrogate, a non-JSON type)."""


def number(x: float | int) -> str:
    """ECMAScript Number.prototype.toString of an IEEE-754 double (RFC 8785 3.2.2.3)."""
    if isinstance(x, bool):
        raise JcsError("a boolean is not a number")
    if isinstance(x, int):
        if -MAX_SAFE_INTEGER <= x <= MAX_SAFE_INTEGER:
            return str(x)
        x = float(x)  # I-JSON: a number is a double; large integers lose their low digits
    if not math.isfinite(x):
        raise JcsError(f"{x!r} is not a finite number (RFC 8785 has no NaN or Infinity)")
    if x == 0:
        return "0"  # -0 too
    sign = "-" if x < 0 else ""
    mantissa, _, exp = repr(abs(x)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = whole + frac
    n = len(whole) + (int(exp) if exp else 0)  # value = 0.DIGITS * 10**n
    stripped = digits.lstrip("0")
    n -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        out = digits + "0" * (n - k)
    elif 0 < n <= 21:
        out = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        out = "0." + "0" * -n + digits
    else:
        e = n - 1
        out = (digits[0] + ("." + digits[1:] if k > 1 else "") + "e"
               + ("+" if e >= 0 else "-") + str(abs(e)))
    return sign + out


def _string(s: str) -> str:
    # json.dumps with ensure_ascii=False escapes exactly what JSON.stringify escapes: `"`, `\`,
    # \b \f \n \r \t in short form, other controls below U+0020 as \u00xx (lower-case hex).
    return json.dumps(s, ensure_ascii=False)


def _key(name: str) -> bytes:
    # UTF-16 code unit order (RFC 8785 3.2.3): big-endian UTF-16 bytes compare the same way.
    return name.encode("utf-16-be", "surrogatepass")


def _write(v: Any, out: list[str]) -> None:
    if v is None:
        out.append("null")
    elif v is True:
        out.append("true")
    elif v is False:
        out.append("false")
    elif isinstance(v, str):
        out.append(_string(v))
    elif isinstance(v, int | float):
        out.append(number(v))
    elif isinstance(v, dict):
        out.append("{")
        first = True
        for k in sorted(v, key=_key):
            if not isinstance(k, str):
                raise JcsError(f"object member name {k!r} is not a string")
            if not first:
                out.append(",")
            first = False
            out.append(_string(k))
            out.append(":")
            _write(v[k], out)
        out.append("}")
    elif isinstance(v, list | tuple):
        out.append("[")
        for i, item in enumerate(v):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise JcsError(f"{type(v).__name__} is not a JSON value")


def _plain(value: Any) -> bool:
    """Whether json.dumps (sorted, compact, ensure_ascii=False) writes `value` as RFC 8785
    does: no floats (ECMAScript's layout), no integers beyond 2**53, only exact ints and str
    member names below U+D800 (where code point and UTF-16 order agree), JSON types only.
    drkit-verify takes the same shortcut; a drill writes its open record a score of times, and
    _write in Python was most of that (issue 13)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if v is None or v is True or v is False or isinstance(v, str):
            continue
        t = type(v)
        if t is int:
            if not -MAX_SAFE_INTEGER <= v <= MAX_SAFE_INTEGER:
                return False
        elif t is dict:
            for k in v:
                if type(k) is not str or not (k.isascii() or _narrow(k)):
                    return False
            stack.extend(v.values())
        elif t is list or t is tuple:
            stack.extend(v)
        else:
            return False
    return True


def _narrow(name: str) -> bool:
    return all(c < "\ud800" for c in name)


def canonicalize(value: Any) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of a JSON value."""
    if _plain(value):
        text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    else:
        out: list[str] = []
        _write(value, out)
        text = "".join(out)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate ("\ud800") has no UTF-8 form
        raise JcsError(f"a string holds a lone surrogate ({e.reason})") from None


class DuplicateKey(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise DuplicateKey(f"duplicate member name {dup!r}")
    return d


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (non-finite numbers are refused)")


def _float(text: str) -> float:
    f = float(text)
    if not math.isfinite(f):
        raise ValueError(f"{text} is not a finite double (non-finite numbers are refused)")
    return f


_STRICT = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_constant,
                           parse_float=_float)


def loads_strict(data: bytes | str) -> Any:
    """json.loads that refuses duplicate member names and non-finite numbers (ValueError)."""
    if isinstance(data, bytes | bytearray):
        data = data.decode("utf-8")  # UnicodeDecodeError is a ValueError
    return _STRICT.decode(data)
