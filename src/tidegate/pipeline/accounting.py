"""What happens once a request is over, whatever its outcome: settle its reservation, price it,
meter it exactly once, log its text when its tenant opted in, and record metrics and the access
line. Everything here is synchronous or in-process except the limiter's settle (one Redis round
trip with the shared store).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from tidegate.errors import (
    AuthenticationError,
    ContentPolicyError,
    ContentPolicyUnavailableError,
    InvalidRequestError,
    LimiterUnavailableError,
    LimitExceededError,
    NotFoundError,
    PermissionDeniedError,
    QueueFullError,
    QueueTimeoutError,
    TidegateError,
)
from tidegate.metering import PromptLogWriter, UsageEvent, UsageMeter
from tidegate.observability.metrics import RejectionReason
from tidegate.observability.recorder import RequestRecorder
from tidegate.observability.records import RequestRecord
from tidegate.pipeline.limits import Admission
from tidegate.pipeline.pricing import PriceTable
from tidegate.pipeline.taps import RequestTap
from tidegate.store.errors import StoreUnavailableError

_LIMIT_REASONS: dict[str, RejectionReason] = {
    "rate_limit_exceeded": "rate_limit",
    "concurrency_limit": "concurrency",
    "budget_exceeded": "budget",
}


def rejection_reason(error: TidegateError) -> RejectionReason | None:
    """Why the gateway itself refused a request; None for failures further down."""
    if isinstance(error, LimitExceededError):
        return _LIMIT_REASONS.get(error.limit_code, "rate_limit")
    if isinstance(error, LimiterUnavailableError):
        return "limiter_unavailable"
    if isinstance(error, AuthenticationError):
        return "auth"
    if isinstance(error, ContentPolicyError | ContentPolicyUnavailableError):
        return "content_policy"
    if isinstance(error, InvalidRequestError | NotFoundError | PermissionDeniedError):
        return "validation"
    if isinstance(error, QueueFullError | QueueTimeoutError):
        return "overload"  # the gateway's own queue refused it (queue metrics say which way)
    return None


def prompt_text(payload: Mapping[str, Any]) -> str:
    """The prompt as one text, for prompt logging (redacted later, off the request path)."""
    messages = payload.get("messages")
    if isinstance(messages, list):
        lines = []
        for message in messages:
            if isinstance(message, dict):
                content = message.get("content")
                text = content if isinstance(content, str) else str(content or "")
                lines.append(f"{message.get('role', '?')}: {text}")
        return "\n".join(lines)
    prompt = payload.get("prompt")
    return prompt if isinstance(prompt, str) else str(prompt)


class RequestAccounting:
    def __init__(
        self,
        *,
        recorder: RequestRecorder,
        prices: PriceTable,
        meter: UsageMeter | None,
        prompt_logs: PromptLogWriter | None,
        tap: RequestTap | None = None,
    ) -> None:
        """``tap``: told when the requests it saw admitted are over."""
        self._tap = tap
        self._recorder = recorder
        self._prices = prices
        self._meter = meter
        self._prompt_logs = prompt_logs

    def check_backlog(self) -> None:
        """Raises while usage cannot be kept any more: the store has been down so long that
        the write-ahead backlog reached metering.wal_max_bytes (served unmetered, a request
        would be lost to budgets and reports)."""
        if self._meter is not None and self._meter.full:
            raise StoreUnavailableError(
                "The usage store has been unreachable so long that this gateway's usage backlog "
                "is full (metering.wal_max_bytes). Retry later; an operator can check the "
                "database.",
                retry_after_s=5.0,
            )

    async def finish(
        self,
        record: RequestRecord,
        *,
        admission: Admission | None,
        payload: Mapping[str, Any] | None,
        retention_days: int,
        metered: bool = False,
    ) -> None:
        """``metered``: ``meter`` already ran (before the response's last bytes were sent)."""
        # Metered before the settle's await (a Redis round trip): the client may already hold
        # the whole response, so a crash or a cancellation there must not lose its record.
        if not metered:
            self.meter(record, payload=payload, retention_days=retention_days)
        if admission is not None:
            await admission.settle(
                prompt_tokens=record.prompt_tokens,
                cached_tokens=record.cached_tokens,
                completion_tokens=record.completion_tokens,
            )

    def meter(
        self, record: RequestRecord, *, payload: Mapping[str, Any] | None, retention_days: int
    ) -> None:
        """Price the request, record its metrics and access line, and write its usage record
        ahead (no await: once this returns, the record survives a kill -9)."""
        if record.prompt_tokens or record.completion_tokens:
            record.cost_usd = self._prices.cost_usd(
                record.model,
                prompt_tokens=record.prompt_tokens,
                cached_tokens=record.cached_tokens,
                completion_tokens=record.completion_tokens,
            )
        duration_s = self._recorder.finish(record)
        if record.tapped and self._tap is not None:
            self._tap.finished(record, duration_s=duration_s, payload=payload)
        if record.tenant_id is None:
            return  # refused before its key was known: there is no tenant to meter
        if payload is None:
            payload = record.refused_fields  # a content-safety refusal (tenants logging prompts)
        if self._meter is not None:
            self._meter.record(_usage_event(record, duration_s))
        if (
            self._prompt_logs is not None
            and record.log_prompt
            and record.capture is not None
            and payload is not None
        ):
            self._prompt_logs.log(
                request_id=record.request_id,
                tenant_id=record.tenant_id,
                prompt=prompt_text(payload),
                completion=record.capture.text,
                retention_days=retention_days,
            )


def _usage_event(record: RequestRecord, duration_s: float) -> UsageEvent:
    assert record.tenant_id is not None
    return UsageEvent(
        request_id=record.request_id,
        created_at=datetime.fromtimestamp(record.arrived_at, UTC),
        tenant_id=record.tenant_id,
        key_id=record.key_id,
        model=record.model,
        replica=record.replica,
        route=record.route,
        prompt_tokens=record.prompt_tokens,
        cached_tokens=record.cached_tokens,
        completion_tokens=record.completion_tokens,
        cost_usd=record.cost_usd,
        ttft_ms=None if record.ttft_s is None else record.ttft_s * 1000,
        duration_ms=duration_s * 1000,
        status=record.status,
        outcome=record.outcome,
        kind=record.kind,
        client_request_id=record.client_request_id,
        pool=record.pool,
        route_reason=record.route_reason,
    )
