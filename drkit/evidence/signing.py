"""Ed25519 keys: generate a pair, load them, sign and verify canonical record bytes.

Keys are PEM (PKCS#8 private, SubjectPublicKeyInfo public) so `openssl pkeyutl` reads them.
A key's id is the SHA-256 of its raw 32-byte public key, in hex: records name the key that
signed them, so verify can say "signed by another key" rather than just "bad signature".
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from drkit.errors import BadInput

if TYPE_CHECKING:  # cryptography is imported when a key is really used
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

MAX_KEY_BYTES = 64 * 1024


def public_path(private: Path) -> Path:
    """keys/evidence.key -> keys/evidence.pub (the pair `keygen` writes)."""
    return private.with_suffix(".pub") if private.suffix else private.with_name(
        private.name + ".pub")


def key_id(public: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path
    key_id: str


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
    return KeyPair(path, pub, key_id(key.public_key()))


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


def load_public_key(path: Path) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = _read_key(path, "public", "pass --public-key FILE, or set evidence.public_key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise BadInput(f"public key {path} is not a PEM public key ({e})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BadInput(f"public key {path} is not an Ed25519 key")
    return key


def sign(key: Ed25519PrivateKey, canon: bytes) -> str:
    return base64.b64encode(key.sign(canon)).decode("ascii")


def signature_ok(key: Ed25519PublicKey, canon: bytes, signature: str) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        key.verify(base64.b64decode(signature, validate=True), canon)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
