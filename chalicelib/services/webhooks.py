"""Job-finished webhooks: URL checks (SSRF), Standard Webhooks signing, delivery with retries.

Signing follows the Standard Webhooks specification v1
(https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md):

- headers ``webhook-id`` (the message id, the same on every retry of one message),
  ``webhook-timestamp`` (integer Unix seconds of this attempt) and
  ``webhook-signature`` = ``v1,`` + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}"));
- the per-user secret is ``whsec_`` + base64(24 random bytes); the HMAC key is the
  base64-decoded part after the prefix (``UserModel.webhook_secret``);
- receivers should refuse timestamps more than 5 minutes away (:func:`verify` does).

Address rules (SSRF, OWASP "Server-Side Request Forgery Prevention Cheat Sheet"):
``https`` only; no credentials in the URL; the host is resolved and *every* address
must be globally routable, so private (RFC 1918, ULA), loopback, link-local (incl.
the cloud metadata address 169.254.169.254), CGNAT, multicast, reserved and
unspecified addresses are refused. ``ALLOW_LOOPBACK_WEBHOOKS`` (dev stack only)
also admits ``http``/``https`` to loopback. The URL is checked at submit (400,
field ``webhook_url``) and again at each delivery, and the delivery connects to
the address that was checked (no second DNS lookup, so no DNS-rebinding window),
never follows redirects and ignores proxy environment variables.

Delivery: the first attempt is due when the job finishes; failures are retried after
:data:`BACKOFF_SCHEDULE_S` (attempts and ``webhook_next_at`` recorded on the job) up
to ``WEBHOOK_MAX_ATTEMPTS``; the stuck-work sweep sends due ones. Each attempt is
claimed with a conditional write, so two sweeps never send the same attempt twice.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import secrets
import socket
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
from pynamodb.exceptions import UpdateError
from requests.adapters import HTTPAdapter

from chalicelib.db import JobModel, UserModel
from chalicelib.errors import ApiError, ValidationError
from chalicelib.settings import get_settings

logger = logging.getLogger("promptcanvas.webhooks")

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24
MAX_URL_CHARS = 2048
#: A webhook URL's shape (the document's ``pattern``): http(s), a host with no credentials,
#: no ASCII space or control character (explicit classes: ``\s`` differs between regex
#: dialects). Whether it may receive webhooks is decided by :func:`check_url`.
URL_PATTERN = r"^https?://[^\x00-\x20\x7f/?#@]+(?:[/?#][^\x00-\x20\x7f]*)?$"
TIMESTAMP_TOLERANCE_S = 300  # Standard Webhooks: reject timestamps more than 5 minutes off
#: Seconds to wait before attempt k+1 after attempt k failed (k = 1, 2, ...); the last value repeats.
BACKOFF_SCHEDULE_S = (30, 120, 600, 1800, 3600, 7200, 14400)
CLAIM_MARGIN_S = 60  # a claimed attempt is not due again for timeout + this, in seconds
USER_AGENT = "PromptCanvas-Webhooks/1.0"

#: Cloud metadata endpoints, named for the log; every one is also non-global.
METADATA_ADDRESSES = frozenset({"169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200"})


class WebhookAddressError(Exception):
    """The webhook URL or one of its resolved addresses is not allowed."""


@dataclass(frozen=True)
class CheckedUrl:
    """A webhook URL that passed the checks, with the addresses it resolved to."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]


def _address_allowed(raw: str, allow_loopback: bool) -> bool:
    """Whether one resolved address may receive a webhook."""
    ip = ipaddress.ip_address(raw.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if str(ip) in METADATA_ADDRESSES:
        return False
    if ip.is_loopback:
        return allow_loopback
    return ip.is_global and not ip.is_multicast


def check_url(url: Any, *, resolve: bool = True) -> CheckedUrl:
    """Check a webhook URL and resolve its host.

    Returns:
        The :class:`CheckedUrl` (``addresses`` empty when ``resolve`` is False).

    Raises:
        WebhookAddressError: with a client-safe message.
    """
    allow_loopback = get_settings().allow_loopback_webhooks
    if not isinstance(url, str) or not url.strip():
        raise WebhookAddressError("webhook_url must be a URL string")
    url = url.strip()
    if len(url) > MAX_URL_CHARS:
        raise WebhookAddressError(f"webhook_url must be at most {MAX_URL_CHARS} characters")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise WebhookAddressError("webhook_url is not a valid URL") from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if scheme not in ("https", "http") or not host:
        raise WebhookAddressError("webhook_url must be an https URL")
    if parts.username is not None or parts.password is not None:
        raise WebhookAddressError("webhook_url must not contain credentials")
    port = port or (443 if scheme == "https" else 80)
    addresses: tuple[str, ...] = ()
    if resolve:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError, OSError):
            raise WebhookAddressError("webhook_url host does not resolve") from None
        addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses:
            raise WebhookAddressError("webhook_url host does not resolve")
        for address in addresses:
            if not _address_allowed(address, allow_loopback):
                raise WebhookAddressError(
                    "webhook_url resolves to a private, loopback, link-local or metadata address"
                )
    else:
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None and not _address_allowed(str(literal), allow_loopback):
            raise WebhookAddressError("webhook_url is a private, loopback, link-local or metadata address")
    if scheme == "http":
        if resolve:
            loopback_only = all(ipaddress.ip_address(a.split("%", 1)[0]).is_loopback for a in addresses)
        else:
            loopback_only = host.strip("[]") in ("localhost", "127.0.0.1", "::1")
        if not (allow_loopback and loopback_only):
            raise WebhookAddressError("webhook_url must be an https URL")
    return CheckedUrl(url=url, scheme=scheme, host=host, port=port, addresses=addresses)


def validate_webhook_url(value: Any, field: str = "webhook_url") -> str | None:
    """The ``webhook_url`` field of a job submission (None when absent).

    Raises:
        ValidationError: 400 naming ``field``: not a string matching :data:`URL_PATTERN`
            of at most ``MAX_URL_CHARS`` characters (what the document's schema says).
        ApiError: 422 ``webhook-url-refused`` naming ``field``: a well-formed URL that
            :func:`check_url` refuses (http off loopback, a host that does not resolve or
            resolves to a refused address: rules a schema cannot express).
    """
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_URL_CHARS or not re.fullmatch(URL_PATTERN[1:-1], value):
        raise ValidationError(
            f"webhook_url must be an https URL without credentials, at most {MAX_URL_CHARS} characters",
            field=field,
        )
    try:
        return check_url(value).url
    except WebhookAddressError as exc:
        raise ApiError(422, "webhook-url-refused", str(exc), field=field) from None


# --- secrets and signatures -------------------------------------------------------------------


def new_secret() -> str:
    """A fresh ``whsec_`` + base64(24 random bytes) secret."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def get_or_create_secret(user_id: str) -> str:
    """The user's webhook signing secret, created on first use (a conditional write, so
    concurrent first calls agree on one secret)."""
    try:
        found = UserModel.get(user_id, consistent_read=True).webhook_secret
        if found:
            return found
    except UserModel.DoesNotExist:
        pass
    secret = new_secret()
    try:
        UserModel(user_id).update(
            actions=[UserModel.webhook_secret.set(secret)], condition=UserModel.webhook_secret.does_not_exist()
        )
        return secret
    except UpdateError as exc:
        if getattr(exc, "cause_response_code", None) != "ConditionalCheckFailedException":
            raise
    return UserModel.get(user_id, consistent_read=True).webhook_secret or secret


def secret_json(user_id: str) -> dict[str, str]:
    """``GET /v1/me/webhook-secret``: ``{"secret": "whsec_...", "scheme": ...}`` (the caller's own)."""
    return {"secret": get_or_create_secret(user_id), "scheme": "standard-webhooks-v1"}


def _key(secret: str) -> bytes:
    raw = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
    return base64.b64decode(raw)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: ``v1,`` + base64(HMAC-SHA256(key, id.timestamp.body))."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, now: float | None = None) -> bool:
    """What a receiver does: check the timestamp (5 min tolerance) and any ``v1`` signature,
    in constant time. ``headers`` keys are matched case-insensitively."""
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id, ts, sigs = lower.get("webhook-id"), lower.get("webhook-timestamp"), lower.get("webhook-signature")
    if not (msg_id and ts and sigs):
        return False
    try:
        timestamp = int(ts)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - timestamp) > TIMESTAMP_TOLERANCE_S:
        return False
    expected = sign(secret, msg_id, timestamp, body).split(",", 1)[1]
    for candidate in sigs.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return True
    return False


# --- delivery ---------------------------------------------------------------------------------


class _PinnedAdapter(HTTPAdapter):
    """Connects to an already-checked IP address while keeping the URL's host name for
    the Host header, TLS SNI and certificate verification (urllib3 ``server_hostname`` /
    ``assert_hostname``)."""

    def __init__(self, address: str, hostname: str) -> None:
        self._address = address
        self._hostname = hostname
        super().__init__(max_retries=0)

    def build_connection_pool_key_attributes(self, request, verify, cert=None):  # type: ignore[override]
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        host_params["host"] = self._address
        if host_params.get("scheme") == "https":
            pool_kwargs["server_hostname"] = self._hostname
            pool_kwargs["assert_hostname"] = self._hostname
        return host_params, pool_kwargs


def post_signed(checked: CheckedUrl, body: bytes, headers: dict[str, str], timeout_s: float) -> int:
    """POST ``body`` to the first checked address of ``checked``; returns the HTTP status.

    Raises:
        requests.RequestException: connection, TLS or timeout failure.
    """
    session = requests.Session()
    session.trust_env = False  # no proxies from the environment
    adapter = _PinnedAdapter(checked.addresses[0], checked.host)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    try:
        resp = session.post(checked.url, data=body, headers=headers, timeout=timeout_s, allow_redirects=False)
        resp.close()
        return resp.status_code
    finally:
        session.close()


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(epoch)))


def payload(job: JobModel) -> dict[str, Any]:
    """The webhook body: ``{"type": "job.<status>", "timestamp", "data": job summary}``."""
    reasons = {k: int(v) for k, v in (job.failure_reasons.as_dict() if job.failure_reasons else {}).items() if v}
    return {
        "type": f"job.{job.status}",
        "timestamp": _iso(job.finished_at),
        "data": {
            "job_id": job.job_id,
            "name": job.name,
            "status": job.status,
            "collection": job.collection,
            "total": int(job.total),
            "counts": {
                "queued": int(job.queued_count),
                "running": int(job.running_count),
                "succeeded": int(job.succeeded_count),
                "failed": int(job.failed_count),
            },
            "errors_by_reason": reasons,
            "created_at": _iso(job.created_at),
            "started_at": _iso(job.started_at),
            "finished_at": _iso(job.finished_at),
        },
    }


def message_id(job: JobModel) -> str:
    """The ``webhook-id`` of the job's current finish (stable across retries)."""
    return f"msg_{job.job_id}_{int(job.finish_seq)}"


def backoff_s(attempt: int) -> int:
    """Seconds before the attempt after failed attempt number ``attempt`` (1-based)."""
    return BACKOFF_SCHEDULE_S[min(max(attempt, 1), len(BACKOFF_SCHEDULE_S)) - 1]


def deliver_due(user_id: str, job_id: str, *, now: float | None = None) -> str:
    """Send the job's webhook if an attempt is due; record the outcome on the job.

    Returns:
        ``"not-due"``, ``"claimed-elsewhere"``, ``"delivered"``, ``"retry"`` or ``"failed"``.
    """
    settings = get_settings()
    now = time.time() if now is None else now
    try:
        job = JobModel.get(user_id, job_id, consistent_read=True)
    except JobModel.DoesNotExist:
        return "not-due"
    if job.webhook_state != "pending" or not job.webhook_url or (job.webhook_next_at or 0) > now:
        return "not-due"
    seq = int(job.finish_seq)
    claim_until = now + settings.webhook_timeout_seconds + CLAIM_MARGIN_S
    try:
        job.update(
            actions=[JobModel.webhook_attempts.add(1), JobModel.webhook_next_at.set(claim_until)],
            condition=(JobModel.webhook_state == "pending")
            & (JobModel.webhook_next_at == job.webhook_next_at)
            & (JobModel.finish_seq == seq),
        )
    except UpdateError:
        return "claimed-elsewhere"
    attempt = int(job.webhook_attempts)
    body = json.dumps(payload(job), separators=(",", ":"), sort_keys=True).encode()
    msg_id = message_id(job)
    timestamp = int(time.time())
    permanent = False
    status_code: int | None = None
    try:
        checked = check_url(job.webhook_url)
        secret = get_or_create_secret(user_id)
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, msg_id, timestamp, body),
        }
        status_code = post_signed(checked, body, headers, settings.webhook_timeout_seconds)
        error = None if 200 <= status_code < 300 else f"HTTP {status_code}"
    except WebhookAddressError as exc:
        permanent, error = True, str(exc)
    except requests.RequestException as exc:
        error = f"request failed ({type(exc).__name__})"
    if error is None:
        outcome = "delivered"
        actions = [
            JobModel.webhook_state.set("delivered"),
            JobModel.webhook_delivered_at.set(time.time()),
            JobModel.webhook_next_at.remove(),
            JobModel.webhook_last_error.remove(),
            JobModel.active_shard.remove(),
        ]
    elif permanent or attempt >= settings.webhook_max_attempts:
        outcome = "failed"
        actions = [
            JobModel.webhook_state.set("failed"),
            JobModel.webhook_next_at.remove(),
            JobModel.webhook_last_error.set(error),
            JobModel.active_shard.remove(),
        ]
    else:
        outcome = "retry"
        actions = [
            JobModel.webhook_next_at.set(time.time() + backoff_s(attempt)),
            JobModel.webhook_last_error.set(error),
        ]
    try:
        job.update(actions=actions, condition=(JobModel.webhook_state == "pending") & (JobModel.finish_seq == seq))
    except UpdateError:
        logger.info("webhook outcome not recorded: the job was reopened job_id=%s", job_id)
    logger.info(
        "webhook job_id=%s attempt=%d outcome=%s status=%s error=%s", job_id, attempt, outcome, status_code, error
    )
    return outcome
