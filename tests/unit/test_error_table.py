"""The one table from error cause to HTTP status, and the headers an error implies."""

from __future__ import annotations

import json

import pytest

from chalicelib.auth.exceptions import CODES as AUTH_CODES
from chalicelib.auth.exceptions import AuthError
from chalicelib.errors import DomainError, ErrorCode, Forbidden, NotFound, ValidationError
from chalicelib.flux.exceptions import (
    AllKeysCoolingError,
    NoUsableKeysError,
    UpstreamFailedError,
    UpstreamRejectedError,
)
from chalicelib.http import ERROR_STATUS, error_headers, error_response, error_status


def test_every_code_has_exactly_one_status() -> None:
    assert set(ERROR_STATUS) == set(ErrorCode)
    assert all(400 <= status <= 599 for status in ERROR_STATUS.values())


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (ValidationError("steps must be an integer", field="steps"), 400, "invalid-request"),
        (ValidationError("bad", code="invalid-json"), 400, "invalid-json"),
        (NotFound("job"), 404, "not-found"),
        (Forbidden(), 403, "forbidden"),
        (DomainError(ErrorCode.BODY_TOO_LARGE, "too big"), 413, "body-too-large"),
        (DomainError(ErrorCode.IDEMPOTENCY_KEY_REUSED, "other body"), 422, "idempotency-key-reused"),
        (DomainError(ErrorCode.QUOTA_EXCEEDED, "used up"), 429, "quota-exceeded"),
        (UpstreamRejectedError("refused", field="prompt"), 422, "upstream-rejected"),
        (UpstreamFailedError("gave up"), 502, "upstream-failed"),
        (NoUsableKeysError(), 503, "no-usable-keys"),
        (AllKeysCoolingError(retry_at=112.2, now=100.0), 503, "keys-cooling"),
    ],
)
def test_status_and_code(error: DomainError, status: int, code: str) -> None:
    assert (error_status(error.code), error.code) == (status, code)
    assert error.body()["error"]["code"] == code


def test_domain_errors_carry_no_http() -> None:
    error = DomainError(ErrorCode.RATE_LIMITED, "slow down", retry_after_s=3)
    assert not hasattr(error, "status") and not hasattr(error, "headers")


def test_unknown_codes_are_refused() -> None:
    with pytest.raises(ValueError):
        DomainError("made-up-code", "no such cause")


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert error_headers(DomainError(ErrorCode.RATE_LIMITED, "x", retry_after_s=2.1)) == {"Retry-After": "3"}
    assert error_headers(DomainError(ErrorCode.RATE_LIMITED, "x", retry_after_s=0)) == {"Retry-After": "1"}
    assert error_headers(AllKeysCoolingError(retry_at=112.2, now=100.0))["Retry-After"] == "13"
    assert error_headers(DomainError(ErrorCode.QUOTA_EXCEEDED, "x")) == {}


def test_every_auth_code_is_a_401_with_a_challenge() -> None:
    for code in AUTH_CODES:
        error = AuthError(code)
        assert error_status(error.code) == 401
        expected = "Bearer" if code == "token-missing" else 'Bearer error="invalid_token"'
        assert error_headers(error) == {"WWW-Authenticate": expected}


def test_error_response_shape() -> None:
    response = error_response(ValidationError("steps must be an integer", field="steps"))
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(response.body) == {
        "error": {"code": "invalid-request", "message": "steps must be an integer", "field": "steps"}
    }
