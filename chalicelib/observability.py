"""Structured logs and CloudWatch metrics (aws-lambda-powertools), with secrets kept out.

Logs
    One powertools :class:`~aws_lambda_powertools.Logger` (service from
    ``POWERTOOLS_SERVICE_NAME``) writes one JSON object per line. Every line carries the
    keys bound for the current invocation: ``request_id`` (API Gateway's request id,
    else the Lambda request id), ``user_id`` and ``job_id``. In Lambda,
    :func:`configure` also routes the stdlib loggers ``promptcanvas.*`` / ``chalicelib.*``
    / ``app`` through the same JSON handler, so ``logging.getLogger(__name__)`` calls in
    the services come out structured too. Outside Lambda (``chalice local``, pytest) the
    stdlib loggers are left alone, so ``caplog`` keeps working.

    :class:`RedactingFormatter` removes secrets from every record before it is
    serialised: values under sensitive key names (``authorization``, ``*token*``,
    ``*secret*``, ``password``, ``api_key``, ``cookie``, ``credential``), bearer tokens,
    JWTs, Together keys (``tgp_...`` and long hex strings) and the signature /
    credential / security-token parameters of presigned URLs. Key ids (12 hex digits,
    :func:`chalicelib.flux.keypool.key_id`) are kept.

Metrics
    One powertools :class:`~aws_lambda_powertools.Metrics` in CloudWatch Embedded Metric
    Format (EMF): namespace ``POWERTOOLS_METRICS_NAMESPACE`` (default ``PromptCanvas``),
    default dimension ``service`` (``POWERTOOLS_SERVICE_NAME``). EMF is a JSON log line
    that CloudWatch turns into metrics, so no ``cloudwatch:PutMetricData`` permission is
    needed. Metrics are flushed once per invocation by the middleware :func:`configure`
    registers; outside Lambda :func:`flush_metrics` discards them instead of printing.

    ====================================  =============  =======================================
    metric                                unit           recorded by
    ====================================  =============  =======================================
    ``ImagesGenerated``                   Count          :func:`record_images_generated`
    ``UpstreamLatency``                   Milliseconds   :func:`record_upstream_call`
    ``Upstream429``                       Count          :func:`record_upstream_call` (429)
    ``UpstreamErrors``                    Count          :func:`record_upstream_call` (not 2xx)
    ``HealthyKeys`` / ``CoolingKeys`` /   Count          :func:`record_key_states` (gauges; the
    ``DisabledKeys`` /                                   ``AllKeysUnhealthy`` alarm in infra
    ``OutOfCreditsKeys`` / ``TotalKeys``                 watches ``HealthyKeys`` <= 0)
    ``JobsQueueDepth`` /                  Count          :func:`record_queue`
    ``JobsInFlight``
    ``OldestActiveJobAgeSeconds``         Seconds        :func:`record_queue`
    ``Cleanup<Sweep><Count>``             Count          :func:`record_counts` (cleanup sweeps)
    ====================================  =============  =======================================

Sources: Powertools for AWS Lambda (Python) docs, "Logger" (append_keys, custom
formatter) and "Metrics" (EMF, default ``service`` dimension, flush_metrics);
CloudWatch user guide, "Specification: Embedded metric format".

Example::

    from chalicelib import observability as obs

    obs.bind(user_id=principal.user_id)          # after authentication
    obs.record_upstream_call(latency_ms=812.0, status=200)
    obs.get_logger().info("image stored", extra={"image_id": image_id})
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.metrics import MetricUnit

from chalicelib.settings import get_settings

DEFAULT_NAMESPACE = "PromptCanvas"
REDACTED = "[redacted]"
#: Stdlib logger trees routed through the JSON handler in Lambda.
ROUTED_LOGGERS = ("promptcanvas", "chalicelib", "app")
#: Keys bound per invocation; :func:`clear` removes them.
CONTEXT_KEYS = ("request_id", "user_id", "job_id", "function_name")

_SENSITIVE_KEY = re.compile(
    r"authorization|token|secret|password|passwd|api[_-]?key|apikey|cookie|credential|private[_-]?key|^key$|^keys$",
    re.IGNORECASE,
)
_SENSITIVE_VALUES: tuple[tuple[re.Pattern[str], str], ...] = (
    # presigned URL parameters: signature, access key id (credential), session token
    (re.compile(r"(X-Amz-(?:Signature|Credential|Security-Token)=)[^&\s\"']+", re.IGNORECASE), r"\1" + REDACTED),
    (re.compile(r"\bBearer\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE), "Bearer " + REDACTED),
    # JWTs (header.payload.signature, base64url, header starts with {" -> eyJ)
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), REDACTED),
    # Together keys: tgp_v1_... and legacy 64-hex keys; any hex run of 40+ digits
    (re.compile(r"\btgp_[A-Za-z0-9_-]{8,}"), REDACTED),
    (re.compile(r"\b[0-9a-fA-F]{40,}\b"), REDACTED),
    # Clerk secret keys
    (re.compile(r"\bsk_(?:live|test)_[A-Za-z0-9]{8,}"), REDACTED),
)


def redact_text(text: str) -> str:
    """``text`` with every secret-looking substring replaced by ``[redacted]``.

    Rules (see the module docstring): bearer tokens, JWTs, Together keys, long hex
    strings (40+ digits), Clerk secret keys, presigned URL credentials.
    """
    for pattern, replacement in _SENSITIVE_VALUES:
        text = pattern.sub(replacement, text)
    return text


def redact(value: Any, key: str | None = None) -> Any:
    """A copy of ``value`` (dicts, lists and strings, recursively) without secrets.

    Args:
        value: a log field value.
        key: the field's name; a sensitive name (e.g. ``authorization``, ``api_key``)
            redacts the whole value.
    """
    if key is not None and _SENSITIVE_KEY.search(key) and value not in (None, "", [], {}):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


class RedactingFormatter(LambdaPowertoolsFormatter):
    """The powertools JSON formatter, with :func:`redact` applied to every record
    (message, extra keys and exception text) before serialisation."""

    def serialize(self, log: dict[str, Any]) -> str:  # type: ignore[override]
        """Serialise the structured record ``log`` (a dict) to one JSON line."""
        cleaned = {k: (v if k in ("level", "timestamp", "location") else redact(v, k)) for k, v in log.items()}
        return super().serialize(cleaned)  # type: ignore[arg-type]


_lock = threading.RLock()
_logger: Logger | None = None
_metrics: Metrics | None = None
_configured_apps: set[int] = set()


def get_logger() -> Logger:
    """The process-wide powertools Logger (JSON to stdout), created on first use.

    Its service is ``POWERTOOLS_SERVICE_NAME`` (powertools reads it), its level
    ``POWERTOOLS_LOG_LEVEL`` / ``LOG_LEVEL`` (default INFO).
    """
    global _logger
    if _logger is None:
        with _lock:
            if _logger is None:
                _logger = Logger(logger_formatter=RedactingFormatter(utc=True), utc=True)
    return _logger


def get_metrics() -> Metrics:
    """The process-wide powertools Metrics (EMF), created on first use."""
    global _metrics
    if _metrics is None:
        with _lock:
            if _metrics is None:
                metrics = Metrics()
                if not metrics.namespace:
                    metrics.namespace = DEFAULT_NAMESPACE
                _metrics = metrics
    return _metrics


# -- log context ----------------------------------------------------------------------------------


def bind(**keys: Any) -> None:
    """Add keys (e.g. ``user_id=...``, ``job_id=...``) to every following log line of
    this invocation. ``None`` values are skipped. Never raises."""
    values = {k: str(v) for k, v in keys.items() if v is not None}
    if not values:
        return
    try:
        get_logger().append_keys(**values)
    except Exception:  # noqa: BLE001 - logging must never break a request
        pass


def clear() -> None:
    """Forget the per-invocation keys (:data:`CONTEXT_KEYS`). Never raises."""
    try:
        get_logger().remove_keys(list(CONTEXT_KEYS))
    except Exception:  # noqa: BLE001
        pass


def route_stdlib_loggers(names: Iterable[str] = ROUTED_LOGGERS) -> None:
    """Send the stdlib loggers ``names`` (and their children) through the powertools JSON
    handler, without propagation to the Lambda runtime's plain-text root handler."""
    source = get_logger()
    handler = source.registered_handler
    for name in names:
        std = logging.getLogger(name)
        std.handlers = [handler]
        std.propagate = False
        std.setLevel(source.log_level)


# -- metrics --------------------------------------------------------------------------------------


#: Outside Lambda, recorded values are dropped before powertools' own auto-flush (100) prints them.
_LOCAL_MAX_VALUES = 90


def _add(name: str, unit: MetricUnit, value: float) -> None:
    try:
        with _lock:
            metrics = get_metrics()
            metrics.add_metric(name=name, unit=unit, value=value)
            if not get_settings().lambda_function_name:
                metric_set = metrics.metric_set
                if len(metric_set) >= _LOCAL_MAX_VALUES or len(metric_set[name]["Value"]) >= _LOCAL_MAX_VALUES:
                    metrics.clear_metrics()
    except Exception:  # noqa: BLE001 - a metric must never break a request
        get_logger().debug("metric %s not recorded", name)


def record_images_generated(count: int = 1) -> None:
    """``ImagesGenerated``: images stored (count), once per successful generation."""
    if count > 0:
        _add("ImagesGenerated", MetricUnit.Count, count)


def record_upstream_call(latency_ms: float, status: int | None) -> None:
    """One Together API call: ``UpstreamLatency`` (milliseconds), ``Upstream429`` when
    ``status`` is 429, ``UpstreamErrors`` for any other non-2xx or a transport failure
    (``status`` None)."""
    _add("UpstreamLatency", MetricUnit.Milliseconds, max(0.0, float(latency_ms)))
    if status == 429:
        _add("Upstream429", MetricUnit.Count, 1)
    elif status is None or not 200 <= status < 300:
        _add("UpstreamErrors", MetricUnit.Count, 1)


KEY_STATE_METRICS: dict[str, str] = {
    "healthy": "HealthyKeys",
    "cooling": "CoolingKeys",
    "disabled": "DisabledKeys",
    "out_of_credits": "OutOfCreditsKeys",
}


def record_key_states(states: Iterable[str]) -> dict[str, int]:
    """Gauges of the key pool: how many keys are in each state (effective states, see
    :meth:`chalicelib.flux.keypool.KeyPool.health_report`), plus ``TotalKeys``.

    Every gauge is written, zeros included, so the ``AllKeysUnhealthy`` alarm sees
    ``HealthyKeys = 0`` rather than missing data. Returns ``{metric name: count}``.
    """
    counts = dict.fromkeys(KEY_STATE_METRICS.values(), 0)
    total = 0
    for state in states:
        total += 1
        name = KEY_STATE_METRICS.get(state)
        if name:
            counts[name] += 1
    counts["TotalKeys"] = total
    for name, value in counts.items():
        _add(name, MetricUnit.Count, value)
    return counts


def record_queue(depth: int, in_flight: int, oldest_age_s: float | None) -> None:
    """The jobs queue: ``JobsQueueDepth`` (messages waiting), ``JobsInFlight`` (received,
    not yet deleted) and ``OldestActiveJobAgeSeconds`` (seconds since the oldest
    unfinished job was created; 0 when none)."""
    _add("JobsQueueDepth", MetricUnit.Count, max(0, depth))
    _add("JobsInFlight", MetricUnit.Count, max(0, in_flight))
    _add("OldestActiveJobAgeSeconds", MetricUnit.Seconds, max(0.0, oldest_age_s or 0.0))


def record_counts(prefix: str, counts: Mapping[str, int]) -> None:
    """One Count metric per entry, named ``{prefix}{CamelCaseName}``
    (``record_counts("CleanupRetention", {"images_deleted": 3})`` ->
    ``CleanupRetentionImagesDeleted = 3``)."""
    for name, value in counts.items():
        camel = "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", name) if part)
        _add(f"{prefix}{camel}", MetricUnit.Count, value)


def flush_metrics() -> None:
    """Emit the recorded metrics as one EMF line (in Lambda) or discard them (elsewhere,
    so local runs and tests print nothing). Never raises."""
    try:
        with _lock:
            metrics = get_metrics()
            if not metrics.metric_set:
                return
            if get_settings().lambda_function_name:
                metrics.flush_metrics()
            else:
                metrics.clear_metrics()
    except Exception:  # noqa: BLE001
        get_logger().warning("metrics flush failed")


# -- wiring ---------------------------------------------------------------------------------------


def _request_ids(event: Any) -> dict[str, str | None]:
    """The ids to bind for a Chalice middleware event (HTTP request or other event)."""
    lambda_context = getattr(event, "lambda_context", None) or getattr(event, "context", None)
    aws_request_id = getattr(lambda_context, "aws_request_id", None)
    function_name = getattr(lambda_context, "function_name", None)
    http_context = getattr(event, "context", None)
    api_request_id = http_context.get("requestId") if isinstance(http_context, dict) else None
    return {"request_id": api_request_id or aws_request_id, "function_name": function_name}


def middleware(event: Any, get_response: Callable[[Any], Any]) -> Any:
    """Chalice middleware for every event type: binds ``request_id`` (and the function
    name) for the invocation, runs the handler, then flushes metrics and clears the
    keys. Source: Chalice docs, "Middleware" (``register_middleware(func, 'all')``)."""
    clear()
    bind(**_request_ids(event))
    try:
        return get_response(event)
    finally:
        flush_metrics()
        clear()


def configure(app: Any) -> None:
    """Wire observability into a Chalice ``app`` once: register :func:`middleware` for all
    event types and, in Lambda only, route the stdlib loggers through the JSON handler."""
    if id(app) in _configured_apps:
        return
    _configured_apps.add(id(app))
    app.register_middleware(middleware, "all")
    if get_settings().lambda_function_name:
        route_stdlib_loggers()
