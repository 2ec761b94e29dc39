"""AWS KMS as the evidence signer: the private key never leaves KMS, so the operator whose
drill a record attests cannot sign records themselves (only ask KMS to, which CloudTrail logs,
and which IAM can restrict to the drill's role).

The key must be asymmetric, KeySpec ECC_NIST_P256 with signing algorithm ECDSA_SHA_256 (KMS
has no Ed25519 in the versions moto emulates). KMS signs the 32 raw bytes of the record hash
(SHA-256 of the canonical bytes) as a RAW message, so the signature is ECDSA P-256 with
SHA-256 over hash.bin (the hash as bytes) and checks offline with

    openssl dgst -sha256 -verify kms.pub -signature sig.der hash.bin

(RAW rather than DIGEST: a record is larger than KMS's 4096-byte RAW limit, and moto 5.2
does not implement DIGEST; signing the fixed-size hash works the same on both.)

where kms.pub is the public key exported once (`aws kms get-public-key`, or
`drkit evidence keygen --kms KEY`) and pinned by its fingerprint in the plan.

boto3 is imported here only, lazily; `AWS_ENDPOINT_URL` points it elsewhere (moto in tests).
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

from drkit.errors import BadInput, EnvironmentProblem
from drkit.evidence.signing import ECDSA_P256, Signer

KEY_SPEC = "ECC_NIST_P256"
ALGORITHM = "ECDSA_SHA_256"


class KmsSigner(Signer):
    type = "aws-kms"
    algorithm = ECDSA_P256

    def __init__(self, key: str, *, region: str | None = None, client: Any = None,
                 endpoint_url: str | None = None) -> None:
        self.key = key
        if region is None and key.startswith("arn:"):
            parts = key.split(":")
            region = parts[3] if len(parts) > 3 and parts[3] else None
        self.region = region
        self._client = client
        self._endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
        self._public: Any = None
        self.kms_key: str | None = None

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3  # the door to boto3 for KMS, opened late

            self._client = boto3.client("kms", region_name=self.region,
                                        endpoint_url=self._endpoint or None)
        return self._client

    def _call(self, what: str, **kw: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, what)(**kw)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            raise EnvironmentProblem(f"evidence signer: KMS key {self.key}: {what} failed: "
                                     f"{code or e}") from None
        except BotoCoreError as e:
            raise EnvironmentProblem(f"evidence signer: KMS key {self.key}: {e}") from e

    @property
    def public_key(self) -> Any:
        if self._public is None:
            from cryptography.hazmat.primitives.serialization import load_der_public_key

            got = self._call("get_public_key", KeyId=self.key)
            if got.get("KeySpec", got.get("CustomerMasterKeySpec")) != KEY_SPEC or \
                    ALGORITHM not in got.get("SigningAlgorithms", ()):
                algs = ", ".join(got.get("SigningAlgorithms", ()))
                raise BadInput(f"evidence signer: KMS key {self.key} is "
                               f"{got.get('KeySpec')} ({algs}); drkit needs {KEY_SPEC} with "
                               f"{ALGORITHM} and KeyUsage SIGN_VERIFY")
            self.kms_key = got.get("KeyId") or self.key
            self._public = load_der_public_key(got["PublicKey"])
        return self._public

    def sign(self, canon: bytes) -> str:
        self.public_key  # noqa: B018 - checks the key spec once, before the first signature
        got = self._call("sign", KeyId=self.key, Message=hashlib.sha256(canon).digest(),
                         MessageType="RAW", SigningAlgorithm=ALGORITHM)
        return base64.b64encode(got["Signature"]).decode("ascii")

    def describe(self) -> str:
        return f"AWS KMS key {self.kms_key or self.key} ({self.fingerprint[:16]}...)"
