"""RFC 8785 (JCS): the canonical form of schema_version 2 records, and the strict reader.

The vectors: RFC 8785's examples (tests/evidence/data/jcs, the input/output pairs of the RFC
author's reference test data) and the reference number test file, which is generated
deterministically; its README publishes the SHA-256 of its first 1,000 / 10,000 / 100,000
lines (`<ieee754 hex>,<ECMAScript string>\n`).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import math
import struct
from pathlib import Path

import pytest

from drkit.evidence.jcs import JcsError, canonicalize, loads_strict, number

DATA = Path(__file__).parent / "data" / "jcs"
ROOT = Path(__file__).resolve().parents[2]

STATIC = [int(h, 16) for h in """
0000000000000000 8000000000000000 0000000000000001 8000000000000001 c46696695dbd1cc3
c43211ede4974a35 c3fce97ca0f21056 c3c7213080c1a6ac c39280f39a348556 c35d9b1f5d20d557
c327af4c4a80aaac c2f2f2a36ecd5556 c2be51057e155558 c28840d131aaaaac c253670dc1555557
c21f0b4935555557 c1e8d5d42aaaaaac c1b3de4355555556 c17fca0555555556 c1496e6aaaaaaaab
c114585555555555 c0e046aaaaaaaaab c0aa0aaaaaaaaaaa c074d55555555555 c040aaaaaaaaaaab
c00aaaaaaaaaaaab bfd5555555555555 bfa1111111111111 bf6b4e81b4e81b4f bf35d867c3ece2a5
bf0179ec9cbd821e becbf647612f3696 be965e9f80f29212 be61e54c672874db be2ca213d840baf8
bdf6e80fe033c8c6 bdc2533fe68fd3d2 bd8d51ffd74c861c bd5774ccac3d3817 bd22c3d6f030f9ac
bcee0624b3818f79 bcb804ea293472c7 bc833721ba905bd3 bc4ebe9c5db3c61e bc18987d17c304e5
bbe3ad30dfcf371d bbaf7b816618582f bb792f9ab81379bf bb442615600f9499 bb101e77800c76e1
bad9ca58cce0be35 baa4a1e0a3e6fe90 ba708180831f320d ba3a68cd9e985016 446696695dbd1cc3
443211ede4974a35 43fce97ca0f21056 43c7213080c1a6ac 439280f39a348556 435d9b1f5d20d557
4327af4c4a80aaac 42f2f2a36ecd5556 42be51057e155558 428840d131aaaaac 4253670dc1555557
421f0b4935555557 41e8d5d42aaaaaac 41b3de4355555556 417fca0555555556 41496e6aaaaaaaab
4114585555555555 40e046aaaaaaaaab 40aa0aaaaaaaaaaa 4074d55555555555 4040aaaaaaaaaaab
400aaaaaaaaaaaab 3fd5555555555555 3fa1111111111111 3f6b4e81b4e81b4f 3f35d867c3ece2a5
3f0179ec9cbd821e 3ecbf647612f3696 3e965e9f80f29212 3e61e54c672874db 3e2ca213d840baf8
3df6e80fe033c8c6 3dc2533fe68fd3d2 3d8d51ffd74c861c 3d5774ccac3d3817 3d22c3d6f030f9ac
3cee0624b3818f79 3cb804ea293472c7 3c833721ba905bd3 3c4ebe9c5db3c61e 3c18987d17c304e5
3be3ad30dfcf371d 3baf7b816618582f 3b792f9ab81379bf 3b442615600f9499 3b101e77800c76e1
3ad9ca58cce0be35 3aa4a1e0a3e6fe90 3a708180831f320d 3a3a68cd9e985016 4024000000000000
4014000000000000 3fe0000000000000 3fa999999999999a 3f747ae147ae147b 3f40624dd2f1a9fc
3f0a36e2eb1c432d 3ed4f8b588e368f1 3ea0c6f7a0b5ed8d 3e6ad7f29abcaf48 3e35798ee2308c3a
3ed539223589fa95 3ed4ff26cd5a7781 3ed4f95a762283ff 3ed4f8c60703520c 3ed4f8b72f19cd0d
3ed4f8b5b31c0c8d 3ed4f8b58d1c461a 3ed4f8b5894f7f0e 3ed4f8b588ee37f3 3ed4f8b588e47da4
3ed4f8b588e3849c 3ed4f8b588e36bb5 3ed4f8b588e36937 3ed4f8b588e368f8 3ed4f8b588e368f1
3ff0000000000000 bff0000000000000 bfeffffffffffffa bfeffffffffffffb 3feffffffffffffa
3feffffffffffffb 3feffffffffffffc 3feffffffffffffe bfefffffffffffff bfefffffffffffff
3fefffffffffffff 3fefffffffffffff 3fd3333333333332 3fd3333333333333 3fd3333333333334
0010000000000000 000ffffffffffffd 000fffffffffffff 7fefffffffffffff ffefffffffffffff
4340000000000000 c340000000000000 4430000000000000 44b52d02c7e14af5 44b52d02c7e14af6
44b52d02c7e14af7 444b1ae4d6e2ef4e 444b1ae4d6e2ef4f 444b1ae4d6e2ef50 3eb0c6f7a0b5ed8c
3eb0c6f7a0b5ed8d 41b3de4355555553 41b3de4355555554 41b3de4355555555 41b3de4355555556
41b3de4355555557 becbf647612f3696 43143ff3c1cb0959
""".split()]


def _bits(f: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", f))[0]


def _f(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


def numbers():
    """The reference number sequence: the static list, 2,000 subnormal neighbours, then doubles
    drawn from a SHA-256 chain (little-endian 8-byte words, skipping 0, NaN and infinities)."""
    yield from (_f(b) for b in STATIC)
    for i in range(2000):
        yield _f(0x0010000000000000 + i)
    block = bytes(32)
    while True:
        block = hashlib.sha256(block).digest()
        for i in range(0, 32, 8):
            f = struct.unpack("<d", block[i:i + 8])[0]
            if f != 0 and math.isfinite(f):
                yield f


def _file_hash(fmt, lines: int) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    for i, f in enumerate(numbers()):
        if i == lines:
            break
        line = f"{_bits(f):x},{fmt(f)}\n".encode()
        h.update(line)
        size += len(line)
    return h.hexdigest(), size


# From the reference test data's README (testdata/README.md of cyberphone/json-canonicalization).
PUBLISHED = {1000: ("be18b62b6f69cdab33a7e0dae0d9cfa869fda80ddc712221570f9f40a5878687", 37967),
             10000: ("b9f7a8e75ef22a835685a52ccba7f7d6bdc99e34b010992cbc5864cd12be6892", 399022),
             100000: ("22776e6d4b49fa294a0d0f349268e5c28808fe7e0cb2bcbe28f63894e494d4c7", 4031728)}


def _script_module():
    """The stand-alone auditor script, imported as a module (it has no .py suffix)."""
    path = ROOT / "drkit-verify"
    loader = importlib.machinery.SourceFileLoader("drkit_verify_script", str(path))
    spec = importlib.util.spec_from_loader("drkit_verify_script", loader)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("lines", sorted(PUBLISHED))
def test_numbers_match_the_published_reference_file(lines):
    assert _file_hash(number, lines) == PUBLISHED[lines]


def test_the_auditor_script_formats_numbers_the_same():
    script = _script_module()
    assert _file_hash(script.jcs_number, 10000) == PUBLISHED[10000]


def test_python_float_repr_is_not_jcs():
    # The reason for this module: Python's own layout differs from ECMAScript's.
    assert repr(1e21) == "1e+21" and number(1e21) == "1e+21"
    assert repr(1e20) == "1e+20" and number(1e20) == "100000000000000000000"
    assert repr(1e-7) == "1e-07" and number(1e-7) == "1e-7"
    assert repr(0.0) == "0.0" and number(0.0) == "0" and number(-0.0) == "0"
    assert number(4.5) == "4.5" and number(2e-3) == "0.002" and number(10**22) == "1e+22"


@pytest.mark.parametrize("name", ["arrays", "french", "structures", "unicode", "values", "weird"])
def test_rfc8785_examples(name):
    given = loads_strict((DATA / f"{name}.input.json").read_bytes())
    expected = (DATA / f"{name}.output.json").read_bytes()
    assert canonicalize(given) == expected
    assert _script_module().jcs(given) == expected


def test_sorting_is_by_utf16_code_units_not_code_points():
    # U+1F602 is D83D DE02 in UTF-16: it sorts before U+FB33 (as in RFC 8785's example),
    # though its code point is higher.
    assert canonicalize({"\ufb33": 1, "\U0001f602": 2}) == '{"\U0001f602":2,"\ufb33":1}'.encode()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_have_no_canonical_form(bad):
    with pytest.raises(JcsError, match="not a finite number"):
        canonicalize({"x": bad})


def test_lone_surrogates_have_no_canonical_form():
    with pytest.raises(JcsError, match="lone surrogate"):
        canonicalize({"x": "\ud800"})


@pytest.mark.parametrize("text,match", [
    ('{"verdict":"fail","verdict":"pass"}', "duplicate member name 'verdict'"),
    ('{"a":{"b":1,"b":1}}', "duplicate member name 'b'"),
    ('{"rto":NaN}', "NaN is not a JSON number"),
    ('{"rto":Infinity}', "Infinity is not a JSON number"),
    ('{"rto":-Infinity}', "-Infinity is not a JSON number"),
    ('{"rto":1e400}', "not a finite double"),
])
def test_the_strict_reader_refuses_what_tools_read_differently(text, match):
    with pytest.raises(ValueError, match=match):
        loads_strict(text)
    with pytest.raises(ValueError):
        _script_module().loads_strict(text)


@pytest.mark.parametrize("text", [
    *[(DATA / f"{n}.input.json").read_text() for n in
      ("arrays", "french", "structures", "unicode", "values", "weird")],
    '{"b":1,"a":[1,2.5,{"z":null,"y":true}]}',  # a float: not json.dumps's layout
    '{"a":0.0,"b":-0.0,"c":1e21,"d":1e-7}',
    '{"n":9007199254740993,"m":-9007199254740993}',  # beyond 2**53: JCS makes it a double
    '{"\\ufb33":1,"\\ud83d\\ude02":2}',  # UTF-16 order, written as escapes
    '{"\ufb33":1,"\U0001f602":2,"\ue000":3}',  # and as UTF-8
    '{"s":"\\u001f\\"\\\\\\n","\u00e9":"\u00e9t\u00e9"}',
    '{"a":{"c":1,"b":[{"y":2,"x":1}]},"A":9007199254740992}',
])
def test_the_auditor_scripts_fast_form_is_rfc8785(text):
    # drkit-verify writes a record with json.dumps (8x faster than its jcs()) unless loads_record
    # saw something json.dumps writes differently: either way the bytes are RFC 8785's.
    script = _script_module()
    value, plain = script.loads_record(text)
    assert script.canonical({"v": value}, 2, plain) == canonicalize({"v": value})


def test_the_auditor_script_checks_signatures_in_libcrypto():
    # The fast path (no openssl process per record) is there on this machine, and agrees with
    # the cryptography package on good and bad Ed25519 and ECDSA P-256 signatures.
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    lib = _script_module().Libcrypto.load()
    assert lib is not None
    msg = b'{"a":1}'
    for key, alg, sign in (
            (ed25519.Ed25519PrivateKey.generate(), "ed25519", lambda k, m: k.sign(m)),
            (ec.generate_private_key(ec.SECP256R1()), "ecdsa-p256-sha256",
             lambda k, m: k.sign(hashlib.sha256(m).digest(), ec.ECDSA(hashes.SHA256())))):
        pub = key.public_key()
        pem = pub.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo)
        der = pub.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)
        assert lib.key(pem)[1] == der and _script_module().algorithm_of(der) == alg
        sig = sign(key, msg)
        assert lib.verify(pem, alg, msg, sig)
        assert not lib.verify(pem, alg, msg + b" ", sig)
        assert not lib.verify(pem, alg, msg, sig[:-1] + bytes([sig[-1] ^ 1]))
        assert not lib.verify(pem, "ed25519" if alg != "ed25519" else "ecdsa-p256-sha256",
                              msg, sig)
    assert lib.key(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n") == \
        (None, None)
