"""Relaying an upstream SSE stream to the client.

Events are forwarded as the upstream framed them (no re-serialisation). Each event's JSON is
parsed once, cheaply, to learn what the gateway needs: the first content chunk (TTFT), chunk
spacing (ITL), usage, and whether the upstream sent something broken. The usage-only chunk
that the gateway asked for on the client's behalf is dropped unless the client asked for it.
Once the first byte has gone out the response cannot become an error response, so failures
end the stream with an in-band error event and ``[DONE]`` — never an invented finish_reason.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson
from prometheus_client import Histogram

from tidegate.errors import LimitExceededError, TidegateError, UpstreamError, UpstreamErrorKind
from tidegate.observability.records import RequestRecord
from tidegate.protocol.sse import DONE_EVENT, DONE_PAYLOAD, SSESplitter, error_event, event_data
from tidegate.routing.replicas import Replica


def has_content(choices: list[Any]) -> bool:
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        if choice.get("text"):
            return True
        delta = choice.get("delta")
        if isinstance(delta, dict) and (
            delta.get("content") or delta.get("reasoning_content") or delta.get("tool_calls")
        ):
            return True
    return False


def read_usage(usage: dict[str, Any], record: RequestRecord) -> None:
    record.prompt_tokens = int(usage.get("prompt_tokens") or 0)
    record.completion_tokens = int(usage.get("completion_tokens") or 0)
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict):
        record.cached_tokens = int(details.get("cached_tokens") or 0)


class StreamFailure(Exception):
    """Raised after the in-band error event has been yielded, so the caller can count it."""

    def __init__(self, error: TidegateError, kind: UpstreamErrorKind | None) -> None:
        super().__init__(error.message)
        self.error = error
        self.kind = kind
        """The upstream failure kind; None when the gateway itself ended the stream."""


async def relay_events(
    *,
    replica: Replica,
    chunks: AsyncIterator[bytes],
    record: RequestRecord,
    client_wants_usage: bool,
    itl: Histogram,
    completion_limit: int | None = None,
) -> AsyncGenerator[bytes, None]:
    """Yield the client's bytes, the events of each upstream read as one piece, and
    ``DONE_EVENT`` on its own last; raise ``StreamFailure`` after an in-band error.

    ``completion_limit``: the completion tokens reserved for the response (all sequences). The
    forwarded request already asks for no more, so an engine that honours max_tokens never
    reaches it; one that ignores it is cut with an in-band ``budget_exceeded`` error at that
    many content chunks (an engine sends at least one token per content chunk), and the tokens
    it reports are settled in full.
    """
    splitter = SSESplitter()
    last_content_at: float | None = None
    itl_child = itl.labels(record.model)
    failure: UpstreamError | None = None
    content_chunks = 0
    capture = record.capture
    # The events of one upstream read go out as one piece: one write to the client (and one
    # trip through the ASGI send chain) per read rather than per event, so a gateway that falls
    # behind catches up instead of paying per event for being behind.
    out: list[bytes] = []
    try:
        async for chunk in chunks:
            now: float | None = None  # one clock reading per read: its events arrived together
            for event in splitter.feed(chunk):
                data = event_data(event)
                if data is None:
                    continue  # comments and keep-alives carry nothing for the client
                if data == DONE_PAYLOAD:
                    if out:
                        yield _joined(out)
                    yield DONE_EVENT
                    return
                try:
                    payload = orjson.loads(data)
                except orjson.JSONDecodeError:
                    failure = UpstreamError(
                        f"Replica '{replica.id}' sent a malformed stream event. Retry the request.",
                        kind="protocol",
                    )
                    break
                if not isinstance(payload, dict):
                    failure = UpstreamError(
                        f"Replica '{replica.id}' sent a stream event that is not a JSON object.",
                        kind="protocol",
                    )
                    break
                if "error" in payload:  # the engine's own in-band error: relay it, then end
                    record.outcome = "upstream"
                    record.error_type = "upstream_error"
                    out.append(event)
                    yield _joined(out)
                    yield DONE_EVENT
                    return
                choices = payload.get("choices")
                usage = payload.get("usage")
                if isinstance(usage, dict):
                    read_usage(usage, record)
                    if not choices and not client_wants_usage:
                        continue
                if choices and has_content(choices):
                    if completion_limit is not None and content_chunks >= completion_limit:
                        record.completion_tokens = max(record.completion_tokens, content_chunks)
                        _mark(record, _BUDGET_EXHAUSTED)
                        record.rejection = "budget"
                        out.append(_BUDGET_CUT_EVENT)
                        yield _joined(out)
                        yield DONE_EVENT
                        raise StreamFailure(_BUDGET_EXHAUSTED, None)
                    if now is None:
                        now = time.perf_counter()
                    if last_content_at is None:
                        record.ttft_s = now - record.started
                    else:
                        itl_child.observe(now - last_content_at)
                    last_content_at = now
                    content_chunks += 1
                if capture is not None and choices:
                    capture.add_stream_choices(choices)
                out.append(event)
            if failure is not None:
                break
            if out:
                piece = _joined(out)
                out = []
                yield piece
        else:
            failure = UpstreamError(
                f"Replica '{replica.id}' ended the stream without [DONE]. Retry the request.",
                kind="disconnect",
            )
    except UpstreamError as error:
        failure = error
    except BaseException:
        # The client went away (GeneratorExit, CancelledError) before the engine's usage
        # arrived: the content relayed so far is what was used.
        record.completion_tokens = max(record.completion_tokens, content_chunks)
        raise
    if failure is not None:
        record.completion_tokens = max(record.completion_tokens, content_chunks)
        _mark(record, failure)
        # The events of the same read before the broken one still go out, then the error.
        out.append(error_event(failure.message, failure.error_type, failure.kind))
        yield _joined(out)
        yield DONE_EVENT
        raise StreamFailure(failure, failure.kind)


def _joined(events: list[bytes]) -> bytes:
    return events[0] if len(events) == 1 else b"".join(events)


def _mark(record: RequestRecord, error: TidegateError) -> None:
    """Set the outcome before the last events go out: the request is metered at [DONE]."""
    record.outcome = error.outcome
    record.error_type = error.error_type


_BUDGET_EXHAUSTED = LimitExceededError(
    "This response reached the completion tokens reserved for it (its max_tokens, or what the "
    "tenant's budget or token rate limit had left), so it was cut here. Ask for fewer tokens, "
    "or ask an operator to raise the tenant's budget or limit.",
    code="budget_exceeded",
    retry_after_s=None,
    headers=[],
)
_BUDGET_CUT_EVENT = error_event(
    _BUDGET_EXHAUSTED.message, _BUDGET_EXHAUSTED.error_type, "budget_exceeded"
)
