"""``POST /v1/estimates``: what a job (or an image request) would cost, before it is sent.

The body is the one ``POST /v1/jobs`` takes as JSON (a ``POST /v1/images`` body is one
too: ``prompt`` with ``n`` and the generation fields), validated by the same code
(:func:`chalicelib.jobs.submit.parse_request`), so an estimate is refused exactly when the
job would be. Nothing is written, charged or sent upstream.
"""

from __future__ import annotations

from typing import Any

from chalicelib.jobs import submit


def estimate(raw: bytes | str | None) -> dict[str, Any]:
    """``{"images", "megapixels", "usd", "model", "price_per_mp", "priced_at"}`` of a job
    body (:func:`chalicelib.jobs.submit.estimate_submission`).

    Raises:
        ValidationError / DomainError: 400, 413, 422 exactly as ``POST /v1/jobs`` would.
    """
    body = raw.encode("utf-8") if isinstance(raw, str) else (raw or b"")
    return submit.estimate_submission(submit.parse_request("application/json", body))
