"""Per-user webhook signing secrets (Standard Webhooks ``whsec_...``), stored sealed.

The secret is ``whsec_`` + base64(24 random bytes). DynamoDB holds only its envelope
(``UserModel.webhook_secret_sealed``: AES-GCM under a KMS data key of
``WEBHOOK_SECRET_KMS_KEY_ID``, encryption context ``{"purpose": "webhook-secret",
"user_id": ...}``, see :mod:`chalicelib.crypto.envelope`), never the plaintext. A legacy
plaintext ``webhook_secret`` is read once, sealed and removed.

Rotation (``POST /v1/me/webhook-secret/rotate``) replaces the secret at once: deliveries
signed after it use the new key; receivers must switch to the returned secret.
"""

from __future__ import annotations

import base64
import secrets

from pynamodb.exceptions import UpdateError

from chalicelib.crypto import envelope
from chalicelib.db import UserModel, is_condition_failure
from chalicelib.settings import get_settings

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24
SCHEME = "standard-webhooks-v1"


def new_secret() -> str:
    """A fresh ``whsec_`` + base64(24 random bytes) secret."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _context(user_id: str) -> dict[str, str]:
    return {"purpose": "webhook-secret", "user_id": user_id}


def _seal(user_id: str, secret: str) -> str:
    return envelope.seal(secret.encode(), key_id=get_settings().webhook_secret_kms_key_id, context=_context(user_id))


def _open(user_id: str, sealed: str) -> str:
    key_id = get_settings().webhook_secret_kms_key_id
    return envelope.open_sealed(sealed, key_id=key_id, context=_context(user_id)).decode()


def get_or_create_secret(user_id: str) -> str:
    """The user's signing secret, created on first use.

    Creation is a conditional write, so concurrent first calls agree on one secret. A
    legacy plaintext secret is sealed and its plaintext attribute removed.

    Raises:
        envelope.EnvelopeError: the stored envelope does not decrypt.
        botocore.exceptions.ClientError / BotoCoreError: KMS or DynamoDB failed.
    """
    try:
        user = UserModel.get(user_id, consistent_read=True)
    except UserModel.DoesNotExist:
        user = None
    if user is not None and user.webhook_secret_sealed:
        return _open(user_id, user.webhook_secret_sealed)
    legacy = user.webhook_secret if user is not None else None
    secret = legacy or new_secret()
    if legacy:
        condition = UserModel.webhook_secret == legacy
    else:
        condition = UserModel.webhook_secret_sealed.does_not_exist() & UserModel.webhook_secret.does_not_exist()
    try:
        UserModel(user_id).update(
            actions=[UserModel.webhook_secret_sealed.set(_seal(user_id, secret)), UserModel.webhook_secret.remove()],
            condition=condition,
        )
        return secret
    except UpdateError as exc:
        if not is_condition_failure(exc):
            raise
    return get_or_create_secret(user_id)  # another call won the write: read its secret


def rotate_secret(user_id: str) -> str:
    """Replace the user's signing secret with a new one; returns it.

    Raises:
        botocore.exceptions.ClientError / BotoCoreError: KMS or DynamoDB failed.
    """
    secret = new_secret()
    UserModel(user_id).update(
        actions=[UserModel.webhook_secret_sealed.set(_seal(user_id, secret)), UserModel.webhook_secret.remove()]
    )
    return secret


def secret_json(user_id: str) -> dict[str, str]:
    """``GET /v1/me/webhook-secret``: ``{"secret": "whsec_...", "scheme": "standard-webhooks-v1"}``."""
    return {"secret": get_or_create_secret(user_id), "scheme": SCHEME}


def rotate_json(user_id: str) -> dict[str, str]:
    """``POST /v1/me/webhook-secret/rotate``: the new secret, same shape as :func:`secret_json`."""
    return {"secret": rotate_secret(user_id), "scheme": SCHEME}
