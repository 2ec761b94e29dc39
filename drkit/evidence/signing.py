"""Signers and keys: who signs records, and checking a signature against a pinned key.

Signers (`Signer`): `FileSigner`, an Ed25519 key file (the lab default), and `KmsSigner`
(drkit.evidence.kms: an AWS KMS asymmetric key, ECC_NIST_P256 / ECDSA_SHA_256, whose private
half never leaves KMS). `signer_for(plan)` builds the plan's. A signer never comes from a
record or an open file in the store: only from the plan (or the caller).

Keys are PEM (PKCS#8 private, SubjectPublicKeyInfo public) so openssl reads them.
A key's **fingerprint** (schema_version 2 `key_id`) is the SHA-256 of its DER
SubjectPublicKeyInfo, in hex: `openssl pkey -pubin -in KEY.pub -outform DER | sha256sum`.
Schema_version 1 records name their key by the SHA-256 of the raw 32-byte Ed25519 key.

Signatures: Ed25519 (RFC 8032, pure) over the canonical bytes; ECDSA P-256 with SHA-256 over
the 32 raw bytes of the record hash (DER-encoded, as KMS returns it and
`openssl dgst -sha256 -verify KEY.pub -signature sig.der hash.bin` reads it).
"""

from __future__ import annotations

import base64
import hashlib
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drkit.errors import BadInput

if TYPE_CHECKING:  # cryptography is imported when a key is really used
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from drkit.config import Plan

MAX_KEY_BYTES = 64 * 1024


def public_path(private: Path) -> Path:
    """keys/evidence.key -> keys/evidence.pub (the pair `keygen` writes)."""
    return private.with_suffix(".pub") if private.suffix else private.with_name(
        private.name + ".pub")


def key_id(public: Ed25519PublicKey) -> str:
    """The schema_version 1 key id: SHA-256 of the raw 32-byte Ed25519 public key."""
    from cryptography.hazmat.primitives import serialization

    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def fingerprint(public: Any) -> str:
    """SHA-256 (hex) of the key's DER SubjectPublicKeyInfo (any key type): what the plan pins,
    and what `openssl pkey -pubin -in KEY.pub -outform DER | sha256sum` prints."""
    from cryptography.hazmat.primitives import serialization

    der = public.public_bytes(serialization.Encoding.DER,
                              serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def normalise_fingerprint(value: str) -> str:
    """'sha256:AB..' or 'ab..' -> 'ab..' (64 lower-case hex digits), else BadInput."""
    v = value.strip().lower().removeprefix("sha256:").replace(":", "")
    if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        raise BadInput(f"key fingerprint {value!r} is not a SHA-256 (64 hex digits; get it with "
                       "`openssl pkey -pubin -in KEY.pub -outform DER | sha256sum`)")
    return v


ED25519 = "ed25519"
ECDSA_P256 = "ecdsa-p256-sha256"


def algorithm_of(public: Any) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if isinstance(public, Ed25519PublicKey):
        return ED25519
    if isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1":
        return ECDSA_P256
    raise BadInput(f"unsupported evidence key type {type(public).__name__} (use Ed25519 or "
                   "ECDSA P-256)")


def load_public_pem(data: bytes, where: str = "public key") -> Any:
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise BadInput(f"{where} is not a PEM public key ({e})") from None
    algorithm_of(key)
    return key


def public_pem(public: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    return public.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def verify_signature(public: Any, canon: bytes, signature: str) -> bool:
    """True when `signature` (base64) is the key's signature of `canon`."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        sig = base64.b64decode(signature, validate=True)
        if isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(sig, hashlib.sha256(canon).digest(), ec.ECDSA(hashes.SHA256()))
        else:
            public.verify(sig, canon)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


class Signer(ABC):
    """Signs canonical record bytes. Implementations: FileSigner, kms.KmsSigner."""

    type: str
    algorithm: str
    kms_key: str | None = None

    @property
    @abstractmethod
    def public_key(self) -> Any:
        """The public key (a cryptography public key object)."""

    @abstractmethod
    def sign(self, canon: bytes) -> str:
        """The base64 signature of the canonical bytes."""

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)

    def describe(self) -> str:
        return f"{self.type} key {self.fingerprint[:16]}..."


class FileSigner(Signer):
    """An Ed25519 private key file (the lab default: the key sits on the drill host)."""

    type = "file"
    algorithm = ED25519

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._key = load_private_key(self.path)

    @property
    def public_key(self) -> Any:
        return self._key.public_key()

    @property
    def legacy_key_id(self) -> str:
        return key_id(self._key.public_key())

    def sign(self, canon: bytes) -> str:
        return sign(self._key, canon)

    def describe(self) -> str:
        return f"Ed25519 key file {self.path} ({self.fingerprint[:16]}...)"


def signer_for(plan: Plan | None, *, key_path: Path | str | None = None) -> Signer:
    """The plan's signer (evidence.signer, else the evidence.signing_key file), or the key file
    the caller names. Never a key named by a record or an open file in the store."""
    if key_path:
        return FileSigner(Path(key_path))
    if plan is not None:
        ev = plan.model.evidence
        kms = getattr(ev, "kms_key", None)
        if kms:
            from drkit.evidence.kms import KmsSigner

            return KmsSigner(kms, region=getattr(ev, "kms_region", None))
        if ev.signing_key:
            return FileSigner(plan.resolve(ev.signing_key))
    raise BadInput("evidence: no signer (set evidence.signing_key, or evidence.kms_key for an "
                   "AWS KMS key, in the plan; create a key file with `drkit evidence keygen "
                   "-o keys/evidence.key`)")


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path
    key_id: str  # schema_version 1 key id (raw key)
    fingerprint: str = ""  # what the plan pins (evidence.trusted_keys)


def generate_keypair(path: Path, *, force: bool = False) -> KeyPair:
    """Write an Ed25519 private key (PEM, mode 0600) at `path` and its public key beside it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pub = public_path(path)
    for p in (path, pub):
        if (p.exists() or p.is_symlink()) and not force:
            raise BadInput(f"{p} already exists (pass --force to replace it; records signed "
                           "with the old key then need the old public key to verify)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    path.parent.mkdir(parents=True, exist_ok=True)
    from drkit.files import atomic_write

    atomic_write(path, pem, mode=0o600)
    atomic_write(pub, pub_pem, mode=0o644)  # a public key is meant to be handed out
    return KeyPair(path, pub, key_id(key.public_key()), fingerprint(key.public_key()))


def _read_key(path: Path, what: str, fix: str) -> bytes:
    from drkit.files import read_regular

    try:
        if not path.exists():
            raise FileNotFoundError(path)
        # A regular file only, read with a bound: /dev/zero or a FIFO never hangs (issue 16).
        return read_regular(path, limit=MAX_KEY_BYTES, what=f"{what} key")
    except FileNotFoundError:
        raise BadInput(f"{what} key {path} not found ({fix})") from None
    except OSError as e:
        raise BadInput(f"{what} key {path}: cannot read it: {e.strerror}") from None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = _read_key(path, "signing", f"create it with `drkit evidence keygen -o {path}`")
    mode = path.stat().st_mode & 0o077
    if mode and os.name == "posix":
        raise BadInput(f"signing key {path} is readable by others (mode "
                       f"{path.stat().st_mode & 0o777:o}); run `chmod 600 {path}`")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise BadInput(f"signing key {path} is not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BadInput(f"signing key {path} is not an Ed25519 key (use `drkit evidence keygen`)")
    return key


def load_public_key(path: Path) -> Any:
    """An Ed25519 or ECDSA P-256 public key (PEM) from a file."""
    data = _read_key(path, "public", "pass --public-key FILE, or set evidence.public_key")
    return load_public_pem(data, f"public key {path}")


def sign(key: Ed25519PrivateKey, canon: bytes) -> str:
    return base64.b64encode(key.sign(canon)).decode("ascii")


def signature_ok(key: Ed25519PublicKey, canon: bytes, signature: str) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        key.verify(base64.b64decode(signature, validate=True), canon)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
