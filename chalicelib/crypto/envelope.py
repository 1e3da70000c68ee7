"""Envelope encryption: AES-256-GCM under a KMS data key.

:func:`seal` asks KMS for a fresh data key (``GenerateDataKey``, ``AES_256``) under the
configured key, encrypts the plaintext locally with AES-GCM (``cryptography``; 96-bit
random nonce, the encryption context as associated data) and returns one string holding
the *encrypted* data key, the nonce and the ciphertext. The plaintext data key is never
stored. :func:`open_sealed` sends the encrypted data key to KMS ``Decrypt`` (pinned to the
configured key, with the same encryption context) and decrypts locally.

The encryption context binds a value to its owner (e.g. ``{"purpose": "webhook-secret",
"user_id": ...}``): a sealed value copied to another user's record does not open.

Sources: AWS KMS developer guide, "Envelope encryption", "Encryption context";
``cryptography`` docs, "Authenticated encryption" (AESGCM, 12-byte nonces).
"""

from __future__ import annotations

import base64
import json
import os

from chalicelib.aws import client

PREFIX = "kms1"
NONCE_BYTES = 12


class EnvelopeError(Exception):
    """A sealed value is malformed or does not decrypt (wrong key, context or tampered)."""


def _aad(context: dict[str, str]) -> bytes:
    return json.dumps(context, sort_keys=True, separators=(",", ":")).encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def is_sealed(value: str | None) -> bool:
    """Whether ``value`` looks like :func:`seal` output."""
    return bool(value) and str(value).startswith(PREFIX + ".")


def seal(plaintext: bytes, *, key_id: str, context: dict[str, str]) -> str:
    """Encrypt ``plaintext`` under a new data key of KMS key ``key_id`` (id, ARN or alias).

    Returns:
        ``"kms1.<encrypted data key>.<nonce>.<ciphertext+tag>"`` (URL-safe base64 parts).

    Raises:
        botocore.exceptions.ClientError / BotoCoreError: KMS refused or is unreachable.
    """
    resp = client("kms").generate_data_key(KeyId=key_id, KeySpec="AES_256", EncryptionContext=context)
    nonce = os.urandom(NONCE_BYTES)
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    sealed = AESGCM(resp["Plaintext"]).encrypt(nonce, plaintext, _aad(context))
    return ".".join((PREFIX, _b64(resp["CiphertextBlob"]), _b64(nonce), _b64(sealed)))


def open_sealed(value: str, *, key_id: str, context: dict[str, str]) -> bytes:
    """Decrypt a :func:`seal` value.

    Raises:
        EnvelopeError: malformed, or the ciphertext / context does not match.
        botocore.exceptions.ClientError / BotoCoreError: KMS refused (e.g. another key or
            context: ``InvalidCiphertextException``) or is unreachable.
    """
    parts = value.split(".")
    if len(parts) != 4 or parts[0] != PREFIX:
        raise EnvelopeError("not a sealed value")
    try:
        blob, nonce, sealed = (_unb64(p) for p in parts[1:])
    except (ValueError, TypeError):
        raise EnvelopeError("not a sealed value") from None
    data_key = client("kms").decrypt(CiphertextBlob=blob, KeyId=key_id, EncryptionContext=context)["Plaintext"]
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        return AESGCM(data_key).decrypt(nonce, sealed, _aad(context))
    except (InvalidTag, ValueError):
        raise EnvelopeError("the sealed value does not decrypt") from None
