"""A user's own Together API key ("bring your own key"): ``PUT``/``GET``/``DELETE
/v1/me/together-key`` and the key the user's generations use.

* ``PUT {key}``: the key is checked against the upstream first
  (:func:`chalicelib.flux.own_keys.verify_key`: ``GET /v1/models``, 5 s wall clock, 4 MiB
  cap); a 401/403 is 422 ``together-key-refused`` and nothing is saved. A verified key is
  stored sealed: AES-GCM under a fresh KMS data key of the stack's key
  (``WEBHOOK_SECRET_KMS_KEY_ID``, the key that also seals webhook secrets), encryption
  context ``{"purpose": "together-key", "user_id": ...}`` so a sealed key copied to another
  user's record does not open (:mod:`chalicelib.crypto.envelope`). Its own key-pool row is
  reset to healthy (a key that was refused and is now accepted again may be used again).
* Answers are ``{key_id, last4, verified_at}`` (``GET`` adds ``status``); the key itself
  never reaches a response, a log or an error message.
* ``DELETE`` removes it; the user's later work uses the shared key pool again (jobs
  submitted with the own key do not: they pause, see :mod:`chalicelib.jobs.worker`).

Sources: AWS KMS developer guide, "Envelope encryption" and "Encryption context";
Together error codes (401 invalid key), https://docs.together.ai/docs/error-codes.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chalicelib.crypto import envelope
from chalicelib.db import UserModel
from chalicelib.errors import DomainError, ErrorCode, NotFound, ValidationError
from chalicelib.flux import own_keys
from chalicelib.flux.keypool import key_id
from chalicelib.settings import get_settings
from chalicelib.timefmt import iso8601

MIN_KEY_CHARS = 8
MAX_KEY_CHARS = 256
OPENED_CACHE_SIZE = 512  # decrypted keys kept per process, by sealed value (LRU)

_opened: OrderedDict[str, str] = OrderedDict()  # sha256(sealed) -> key
_opened_lock = threading.Lock()


@dataclass(frozen=True)
class OwnKey:
    """A user's own key, opened. ``repr`` hides the key.

    Attributes:
        key: the Together API key (never logged or returned).
        key_id: its public id (:func:`~chalicelib.flux.keypool.key_id`, 12 hex digits).
        last4: its last four characters.
        verified_at: epoch seconds of the successful ``GET /v1/models``.
    """

    key: str = field(repr=False)
    key_id: str
    last4: str
    verified_at: float


def _context(user_id: str) -> dict[str, str]:
    return {"purpose": "together-key", "user_id": user_id}


def _parse_key(body: Mapping[str, Any]) -> str:
    """The ``key`` of a ``PUT`` body: 8-256 printable ASCII characters, no spaces (as sent:
    nothing is trimmed, the document's pattern is the rule).

    Raises:
        ValidationError: 400 naming ``key`` (or the unknown field).
    """
    for name in body:
        if name != "key":
            raise ValidationError(f"unknown field {name!r}", field=name, code=ErrorCode.UNKNOWN_FIELD)
    value = body.get("key")
    if not isinstance(value, str):
        raise ValidationError("key is required (a string)", field="key")
    if not MIN_KEY_CHARS <= len(value) <= MAX_KEY_CHARS or not all(33 <= ord(c) < 127 for c in value):
        raise ValidationError(
            f"key must be {MIN_KEY_CHARS}-{MAX_KEY_CHARS} printable ASCII characters without spaces", field="key"
        )
    return value


def _json(user: UserModel) -> dict[str, Any]:
    return {
        "key_id": user.together_key_id,
        "last4": user.together_key_last4,
        "verified_at": iso8601(user.together_key_verified_at),
    }


def put_key(user_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """``PUT /v1/me/together-key``: verify, seal and save the user's own key (replacing one).

    Returns:
        ``{"key_id", "last4", "verified_at"}``.

    Raises:
        ValidationError: 400 (not a key). DomainError: 422 ``together-key-refused`` (the
            upstream answered 401/403); 502 ``upstream-failed`` (no verdict: timeout, 5xx,
            429; nothing saved, try again).
        botocore errors: KMS or DynamoDB failed (nothing saved).
    """
    key = _parse_key(body)
    try:
        own_keys.verify_key(key)
    except own_keys.KeyRefused as exc:
        raise DomainError(
            ErrorCode.TOGETHER_KEY_REFUSED,
            f"Together refused this key ({exc.status}); check it at https://api.together.ai/settings/api-keys",
            field="key",
        ) from None
    except own_keys.KeyUnverified as exc:
        raise DomainError(ErrorCode.UPSTREAM_FAILED, f"the key could not be verified: {exc}; try again") from None
    sealed = envelope.seal(key.encode(), key_id=get_settings().webhook_secret_kms_key_id, context=_context(user_id))
    now = time.time()
    kid = key_id(key)
    UserModel(user_id).update(
        actions=[
            UserModel.together_key_sealed.set(sealed),
            UserModel.together_key_id.set(kid),
            UserModel.together_key_last4.set(key[-4:]),
            UserModel.together_key_verified_at.set(now),
        ]
    )
    own_keys.reset(user_id, key)
    return {"key_id": kid, "last4": key[-4:], "verified_at": iso8601(now)}


def _user(user_id: str) -> UserModel | None:
    try:
        user = UserModel.get(user_id, consistent_read=True)
    except UserModel.DoesNotExist:
        return None
    return user if user.together_key_sealed else None


def key_json(user_id: str) -> dict[str, Any]:
    """``GET /v1/me/together-key``: ``{"key_id", "last4", "verified_at", "status", "reason"}``;
    ``status`` is ``active`` | ``cooling`` | ``refused`` (a 401/403 confirmed since it was
    saved) | ``out_of_credits`` (a 402), ``reason`` the upstream's words for the last two.

    Raises:
        NotFound: 404 when the user has no key saved.
    """
    user = _user(user_id)
    if user is None:
        raise NotFound("together key")
    own = _open(user_id, user)
    state = own_keys.health(user_id, own.key)
    status = {"healthy": "active", "disabled": "refused"}.get(state.state, state.state)
    return {**_json(user), "status": status, "reason": state.reason if state.terminal else None}


def delete_key(user_id: str) -> None:
    """``DELETE /v1/me/together-key``: remove the user's key (no error when there is none)."""
    UserModel(user_id).update(
        actions=[
            UserModel.together_key_sealed.remove(),
            UserModel.together_key_id.remove(),
            UserModel.together_key_last4.remove(),
            UserModel.together_key_verified_at.remove(),
        ]
    )


def _open(user_id: str, user: UserModel) -> OwnKey:
    """The user's key, decrypted (KMS ``Decrypt`` once per sealed value and process).

    Raises:
        envelope.EnvelopeError, botocore errors: the envelope does not open.
    """
    sealed = str(user.together_key_sealed)
    digest = hashlib.sha256(f"{user_id}\n{sealed}".encode()).hexdigest()
    with _opened_lock:
        key = _opened.get(digest)
        if key is not None:
            _opened.move_to_end(digest)
    if key is None:
        key_arn = get_settings().webhook_secret_kms_key_id
        key = envelope.open_sealed(sealed, key_id=key_arn, context=_context(user_id)).decode()
        with _opened_lock:
            _opened[digest] = key
            while len(_opened) > OPENED_CACHE_SIZE:
                _opened.popitem(last=False)
    return OwnKey(
        key=key,
        key_id=str(user.together_key_id),
        last4=str(user.together_key_last4),
        verified_at=float(user.together_key_verified_at or 0),
    )


def active_key(user_id: str) -> OwnKey | None:
    """The user's own key, or None when they have none (their work uses the shared pool).

    Raises:
        envelope.EnvelopeError, botocore errors: KMS or DynamoDB failed.
    """
    user = _user(user_id)
    return _open(user_id, user) if user is not None else None


def require_usable(user_id: str, own: OwnKey) -> None:
    """Refuse work up front when the user's own key is known to be refused or out of credits.

    Raises:
        DomainError: 422 ``together-key-unusable`` (replace the key on the Account screen).
    """
    state = own_keys.health(user_id, own.key)
    if state.terminal:
        raise DomainError(ErrorCode.TOGETHER_KEY_UNUSABLE, unusable_message(state.state))


def unusable_message(state: str) -> str:
    """What a user reads when their own key is out (``disabled`` or ``out_of_credits``)."""
    if state == "out_of_credits":
        return "your Together key is out of credits (402); add credits or replace the key on the Account screen"
    return "Together refused your key (401/403); replace it on the Account screen"


def reset_cache() -> None:
    """Forget the decrypted keys of this process (tests)."""
    with _opened_lock:
        _opened.clear()
