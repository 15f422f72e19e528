"""tidegate's one exception hierarchy.

Every error a client can see is a ``TidegateError``. Each subclass fixes the HTTP status, the
OpenAI error ``type`` and the access-log outcome class; the instance carries a message that says
what was wrong and how to fix it, plus an optional ``param`` and ``code``. ``api/errors.py`` turns
them into OpenAI-format bodies in one table. Foreign exceptions (aiohttp, SQLAlchemy, Redis) are
translated where they enter tidegate; anything else that escapes is an internal bug and becomes
a 500, never a 4xx.

    TidegateError
    ├── InvalidRequestError         400  invalid_request_error   validation
    │   ├── ContentPolicyError      400  invalid_request_error   validation  (.policy, .check)
    │   └── PayloadTooLargeError    413  invalid_request_error   validation
    ├── AuthenticationError         401  authentication_error    auth
    ├── PermissionDeniedError       403  permission_error        auth
    ├── NotFoundError               404  not_found_error         validation
    │   └── ModelNotFoundError      404  not_found_error         validation
    ├── OverloadedError             429  rate_limit_error        overload  (Retry-After)
    │   ├── LimitExceededError      429  rate_limit_error        overload  (+ .headers)
    │   └── QueueFullError          429  rate_limit_error        overload  (Retry-After)
    ├── NoReadyReplicaError         503  service_unavailable     overload  (Retry-After)
    ├── QueueTimeoutError           503  service_unavailable     overload  (Retry-After, .reason)
    ├── LimiterUnavailableError     503  service_unavailable     overload  (Retry-After)
    ├── ContentPolicyUnavailableError 503 service_unavailable   upstream  (Retry-After)
    ├── UpstreamError               502  upstream_error          upstream  (.kind)
    │   └── UpstreamTimeoutError    504  timeout_error           timeout
    └── ClientClosedError           499  (never sent)            client_closed
"""

from __future__ import annotations

from typing import ClassVar, Literal

Outcome = Literal["ok", "validation", "auth", "overload", "timeout", "upstream", "client_closed"]
"""The fixed set of access-log and metric outcome classes."""

OUTCOMES: tuple[Outcome, ...] = (
    "ok",
    "validation",
    "auth",
    "overload",
    "timeout",
    "upstream",
    "client_closed",
)


class TidegateError(Exception):
    status: int = 500
    error_type: ClassVar[str] = "internal_error"
    outcome: ClassVar[Outcome] = "upstream"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.retry_after_s = retry_after_s


class InvalidRequestError(TidegateError):
    status = 400
    error_type = "invalid_request_error"
    outcome = "validation"


class ContentPolicyError(InvalidRequestError):
    """A content-safety policy refused the request's text (code ``content_policy_violation``).
    The message names the policy and the check, never the text."""

    def __init__(self, message: str, *, policy: str, check: str) -> None:
        super().__init__(message, code="content_policy_violation")
        self.policy = policy
        self.check = check


class PayloadTooLargeError(InvalidRequestError):
    status = 413


class AuthenticationError(TidegateError):
    status = 401
    error_type = "authentication_error"
    outcome = "auth"


class PermissionDeniedError(TidegateError):
    status = 403
    error_type = "permission_error"
    outcome = "auth"


class NotFoundError(TidegateError):
    status = 404
    error_type = "not_found_error"
    outcome = "validation"


class ModelNotFoundError(NotFoundError):
    pass


class OverloadedError(TidegateError):
    status = 429
    error_type = "rate_limit_error"
    outcome = "overload"


LimitCode = Literal["rate_limit_exceeded", "concurrency_limit", "budget_exceeded"]
"""The fixed set of ``LimitExceededError`` codes (a metric label)."""

LIMIT_CODES: tuple[LimitCode, ...] = ("rate_limit_exceeded", "concurrency_limit", "budget_exceeded")


class LimitExceededError(OverloadedError):
    """A tenant's or key's rate limit, concurrency limit or budget refused the request.

    ``headers`` are the x-ratelimit-* headers the 429 response carries like every other one.
    """

    def __init__(
        self,
        message: str,
        *,
        code: LimitCode,
        retry_after_s: float | None,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        super().__init__(message, code=code, retry_after_s=retry_after_s)
        self.limit_code: LimitCode = code
        self.headers = headers


class NoReadyReplicaError(TidegateError):
    status = 503
    error_type = "service_unavailable"
    outcome = "overload"


class QueueFullError(OverloadedError):
    """The pool's queue for the request's priority class is at its depth limit."""


QueueTimeoutReason = Literal["queue_timeout", "deadline"]
"""Why a queued request was given up (a metric label)."""


class QueueTimeoutError(TidegateError):
    """A queued request did not get a slot within its class's queue timeout or its deadline."""

    status = 503
    error_type = "service_unavailable"
    outcome = "overload"

    def __init__(self, message: str, *, reason: QueueTimeoutReason, retry_after_s: float) -> None:
        super().__init__(message, code=reason, retry_after_s=retry_after_s)
        self.reason: QueueTimeoutReason = reason


class LimiterUnavailableError(TidegateError):
    """The shared limit store (Redis) did not answer and the tenant fails closed."""

    status = 503
    error_type = "service_unavailable"
    outcome = "overload"


class ContentPolicyUnavailableError(TidegateError):
    """A content-safety check that fails closed could not decide (its guard model or
    moderation endpoint is slow or down, or the tenant's policy is not defined here): the text
    was not judged, so this is the service's failure, not the client's (code
    ``content_policy_unavailable``)."""

    status = 503
    error_type = "service_unavailable"
    outcome = "upstream"

    def __init__(self, message: str, *, policy: str, check: str) -> None:
        super().__init__(message, code="content_policy_unavailable", retry_after_s=1.0)
        self.policy = policy
        self.check = check


UpstreamErrorKind = Literal["connect", "timeout", "status", "protocol", "disconnect"]
"""The fixed set of ways an upstream exchange fails (a metric label)."""

UPSTREAM_ERROR_KINDS: tuple[UpstreamErrorKind, ...] = (
    "connect",
    "timeout",
    "status",
    "protocol",
    "disconnect",
)


class UpstreamError(TidegateError):
    status = 502
    error_type = "upstream_error"
    outcome: ClassVar[Outcome] = "upstream"

    def __init__(
        self,
        message: str,
        *,
        kind: UpstreamErrorKind,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.kind: UpstreamErrorKind = kind
        if status is not None:
            self.status = status  # an upstream 4xx is the client's error and keeps its status


class UpstreamTimeoutError(UpstreamError):
    status = 504
    error_type = "timeout_error"
    outcome = "timeout"

    def __init__(self, message: str) -> None:
        super().__init__(message, kind="timeout")


class ClientClosedError(TidegateError):
    """The client went away; nothing is sent, the outcome is recorded."""

    status = 499
    error_type = "client_closed"
    outcome = "client_closed"
