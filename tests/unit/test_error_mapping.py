from __future__ import annotations

import orjson

from tidegate.api.errors import error_response, internal_error_response
from tidegate.errors import (
    AuthenticationError,
    InvalidRequestError,
    NoReadyReplicaError,
    OverloadedError,
    PayloadTooLargeError,
    UpstreamError,
    UpstreamTimeoutError,
)


def test_each_error_keeps_status_type_and_fields() -> None:
    cases = [
        (InvalidRequestError("bad", param="x"), 400, "invalid_request_error"),
        (PayloadTooLargeError("big"), 413, "invalid_request_error"),
        (AuthenticationError("who"), 401, "authentication_error"),
        (OverloadedError("busy", retry_after_s=1.2), 429, "rate_limit_error"),
        (NoReadyReplicaError("loading", retry_after_s=2), 503, "service_unavailable"),
        (UpstreamError("boom", kind="status"), 502, "upstream_error"),
        (UpstreamTimeoutError("slow"), 504, "timeout_error"),
    ]
    for error, status, error_type in cases:
        got_status, body, _ = error_response(error)
        assert got_status == status
        payload = orjson.loads(body)["error"]
        assert payload["type"] == error_type and payload["message"] == error.message
        assert set(payload) == {"message", "type", "param", "code"}


def test_overload_answers_carry_retry_after_rounded_up() -> None:
    _, _, headers = error_response(OverloadedError("busy", retry_after_s=1.2))
    assert (b"retry-after", b"2") in headers


def test_upstream_client_error_keeps_400() -> None:
    error = UpstreamError("prompt too long", kind="status", status=400)
    assert error_response(error)[0] == 400


def test_internal_errors_are_500_and_name_the_request() -> None:
    status, body, _ = internal_error_response("req_1")
    assert status == 500 and b"req_1" in body
