"""Job-finished webhooks: URL checks (SSRF), Standard Webhooks signing, delivery with retries.

Signing follows the Standard Webhooks specification v1
(https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md):

- headers ``webhook-id`` (the message id, the same on every retry of one message),
  ``webhook-timestamp`` (integer Unix seconds of this attempt) and
  ``webhook-signature`` = ``v1,`` + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}"));
- the per-user secret is ``whsec_`` + base64(24 random bytes); the HMAC key is the
  base64-decoded part after the prefix (stored sealed with KMS:
  :mod:`chalicelib.services.webhook_secrets`);
- receivers should refuse timestamps more than 5 minutes away (:func:`verify` does).

Address rules (SSRF, OWASP "Server-Side Request Forgery Prevention Cheat Sheet"):
``https`` on port 443 only; no credentials in the URL; the host is resolved and *every* address
must be globally routable, so private (RFC 1918, ULA), loopback, link-local (incl.
the cloud metadata address 169.254.169.254), CGNAT, multicast, reserved and
unspecified addresses are refused, and so are the IPv6 ranges that translate to IPv4
(NAT64 ``64:ff9b::/96`` and ``64:ff9b:1::/48``, 6to4 ``2002::/16``, IPv4-compatible
``::/96``). ``ALLOW_LOOPBACK_WEBHOOKS`` (dev stack only) also admits ``http``/``https``
to loopback, on any port. The URL is checked at submit (400,
field ``webhook_url``) and again at each delivery, and the delivery connects to
the address that was checked (no second DNS lookup, so no DNS-rebinding window),
never follows redirects and ignores proxy environment variables.

Delivery: the first attempt is due when the job finishes; failures are retried after
:data:`BACKOFF_SCHEDULE_S` (attempts and ``webhook_next_at`` recorded on the job) up
to ``WEBHOOK_MAX_ATTEMPTS``. Deliveries run only in the webhooks queue's own worker
(:mod:`chalicelib.services.webhook_queue`), never in the jobs-queue worker or the sweep
(which enqueue). One exchange takes at most ``WEBHOOK_TIMEOUT_SECONDS`` wall clock and
reads at most ``WEBHOOK_MAX_RESPONSE_BYTES`` (:mod:`chalicelib.services.webhook_http`);
each user gets at most ``WEBHOOK_USER_RATE_LIMIT`` deliveries per
``WEBHOOK_RATE_WINDOW_SECONDS``. Each attempt is claimed with a conditional write, so
two workers never send the same attempt twice.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import socket
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import UpdateError

from chalicelib.db import JobModel
from chalicelib.errors import DomainError, ErrorCode, ValidationError
from chalicelib.services import usage, webhook_http
from chalicelib.services.webhook_secrets import SECRET_PREFIX, get_or_create_secret
from chalicelib.settings import get_settings
from chalicelib.timefmt import iso8601

logger = logging.getLogger("promptcanvas.webhooks")

MAX_URL_CHARS = 2048
#: A webhook URL's shape (the document's ``pattern``): http(s), a host with no credentials,
#: printable ASCII only, no space (a URI, RFC 3986: an IRI's host is sent in its punycode
#: form and its path percent-encoded; the request line carries ASCII only). Explicit
#: classes: ``\s`` and ranges past U+FFFF differ between regex dialects. Whether it may
#: receive webhooks is decided by :func:`check_url`.
URL_PATTERN = r"^https?://[\x21\x22\x24-\x2e\x30-\x3e\x41-\x7e]+(?:[/?#][\x21-\x7e]*)?$"
TIMESTAMP_TOLERANCE_S = 300  # Standard Webhooks: reject timestamps more than 5 minutes off
#: Seconds to wait before attempt k+1 after attempt k failed (k = 1, 2, ...); the last value repeats.
BACKOFF_SCHEDULE_S = (30, 120, 600, 1800, 3600, 7200, 14400)
CLAIM_MARGIN_S = 60  # a claimed attempt is not due again for timeout + this, in seconds
USER_AGENT = "PromptCanvas-Webhooks/1.0"

#: Cloud metadata endpoints, named for the log; every one is also non-global.
METADATA_ADDRESSES = frozenset({"169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200"})
#: IPv6 ranges that embed or translate to an IPv4 address, so a "global" IPv6 address can reach a
#: private IPv4 one through a translator: NAT64 (RFC 6052 well-known prefix, RFC 8215 local-use
#: prefix), 6to4 (RFC 3056) and IPv4-compatible addresses (RFC 4291 2.5.5.1, deprecated).
#: Python's ``is_global`` calls them global.
TRANSLATED_NETWORKS = tuple(ipaddress.ip_network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "2002::/16", "::/96"))
#: The only port a production webhook may use (``ALLOW_LOOPBACK_WEBHOOKS`` admits any port on loopback).
HTTPS_PORT = 443


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
    if isinstance(ip, ipaddress.IPv6Address) and any(ip in net for net in TRANSLATED_NETWORKS):
        return False
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
                raise WebhookAddressError("webhook_url resolves to a private, loopback, link-local or metadata address")
    else:
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None and not _address_allowed(str(literal), allow_loopback):
            raise WebhookAddressError("webhook_url is a private, loopback, link-local or metadata address")
    if resolve:
        loopback_only = all(ipaddress.ip_address(a.split("%", 1)[0]).is_loopback for a in addresses)
    else:
        loopback_only = host.strip("[]") in ("localhost", "127.0.0.1", "::1")
    dev_loopback = allow_loopback and loopback_only
    if scheme == "http" and not dev_loopback:
        raise WebhookAddressError("webhook_url must be an https URL")
    if port != HTTPS_PORT and not dev_loopback:
        raise WebhookAddressError(f"webhook_url must use port {HTTPS_PORT}")
    return CheckedUrl(url=url, scheme=scheme, host=host, port=port, addresses=addresses)


def validate_webhook_url(value: Any, field: str = "webhook_url") -> str | None:
    """The ``webhook_url`` field of a job submission (None when absent).

    Raises:
        ValidationError: 400 naming ``field``: not a string matching :data:`URL_PATTERN`
            of at most ``MAX_URL_CHARS`` characters (what the document's schema says).
        DomainError: 422 ``webhook-url-refused`` naming ``field``: a well-formed URL that
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
        raise DomainError(ErrorCode.WEBHOOK_URL_REFUSED, str(exc), field=field) from None


# --- secrets and signatures -------------------------------------------------------------------


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


def post_signed(checked: CheckedUrl, body: bytes, headers: dict[str, str]) -> webhook_http.Answer:
    """POST ``body`` to the first checked address of ``checked`` within ``WEBHOOK_TIMEOUT_SECONDS``
    (the whole exchange, wall clock), reading at most ``WEBHOOK_MAX_RESPONSE_BYTES`` back.

    Raises:
        webhook_http.DeliveryError: connection, TLS, deadline or an unreadable answer.
    """
    settings = get_settings()
    return webhook_http.post(
        checked.url,
        scheme=checked.scheme,
        host=checked.host,
        port=checked.port,
        address=checked.addresses[0],
        body=body,
        headers=headers,
        deadline_s=settings.webhook_timeout_seconds,
        max_bytes=settings.webhook_max_response_bytes,
    )


def payload(job: JobModel) -> dict[str, Any]:
    """The webhook body: ``{"type": "job.<status>", "timestamp", "data": job summary}``."""
    reasons = {k: int(v) for k, v in (job.failure_reasons.as_dict() if job.failure_reasons else {}).items() if v}
    return {
        "type": f"job.{job.status}",
        "timestamp": iso8601(job.finished_at),
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
            "created_at": iso8601(job.created_at),
            "started_at": iso8601(job.started_at),
            "finished_at": iso8601(job.finished_at),
        },
    }


def message_id(job: JobModel) -> str:
    """The ``webhook-id`` of the job's current finish (stable across retries)."""
    return f"msg_{job.job_id}_{int(job.finish_seq)}"


def delivery_backoff_s(attempt: int) -> int:
    """Seconds before the attempt after failed attempt number ``attempt`` (1-based)."""
    return BACKOFF_SCHEDULE_S[min(max(attempt, 1), len(BACKOFF_SCHEDULE_S)) - 1]


def deliver_due(user_id: str, job_id: str, *, now: float | None = None) -> str:
    """Send the job's webhook if an attempt is due and the user's delivery rate allows it;
    record the outcome on the job.

    Order: due check, per-user rate limit (``WEBHOOK_USER_RATE_LIMIT`` per
    ``WEBHOOK_RATE_WINDOW_SECONDS``; over it nothing is claimed, the caller defers the
    message), the signing secret, then the attempt is claimed with a conditional write and
    sent through :func:`post_signed` (one wall-clock deadline, capped answer).

    Returns:
        ``"not-due"``, ``"rate-limited"``, ``"claimed-elsewhere"``, ``"delivered"``, ``"retry"``
        or ``"failed"``.

    Raises:
        botocore.exceptions.ClientError / BotoCoreError: DynamoDB or KMS failed before the
            attempt was claimed (the message is retried).
    """
    settings = get_settings()
    now = time.time() if now is None else now
    try:
        job = JobModel.get(user_id, job_id, consistent_read=True)
    except JobModel.DoesNotExist:
        return "not-due"
    if job.webhook_state != "pending" or not job.webhook_url or (job.webhook_next_at or 0) > now:
        return "not-due"
    if not usage.take_webhook_slot(user_id):
        return "rate-limited"
    secret = get_or_create_secret(user_id)
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
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, msg_id, timestamp, body),
        }
        status_code = post_signed(checked, body, headers).status
        error = None if 200 <= status_code < 300 else f"HTTP {status_code}"
    except WebhookAddressError as exc:
        permanent, error = True, str(exc)
    except webhook_http.DeliveryError as exc:
        error = f"request failed ({exc.reason})"
    except Exception as exc:  # noqa: BLE001 - the attempt is claimed: record it, or the sweep re-sends it for ever
        logger.exception("webhook delivery raised job_id=%s", job.job_id)
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
            JobModel.webhook_next_at.set(time.time() + delivery_backoff_s(attempt)),
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
