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
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp
import orjson
from prometheus_client import Histogram

from tidegate.errors import UpstreamError
from tidegate.observability.records import RequestRecord
from tidegate.protocol.sse import DONE_EVENT, DONE_PAYLOAD, SSESplitter, error_event, event_data
from tidegate.routing.replicas import Replica
from tidegate.upstream.client import UpstreamClient


def _has_content(choices: list[Any]) -> bool:
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


class StreamFailure(Exception):
    """Raised after the in-band error event has been yielded, so the caller can count it."""

    def __init__(self, error: UpstreamError) -> None:
        super().__init__(error.message)
        self.error = error


async def relay_events(
    *,
    replica: Replica,
    response: aiohttp.ClientResponse,
    record: RequestRecord,
    client_wants_usage: bool,
    itl: Histogram,
) -> AsyncGenerator[bytes, None]:
    """Yield the client's bytes; raise ``StreamFailure`` after an in-band error."""
    splitter = SSESplitter()
    last_content_at: float | None = None
    itl_child = itl.labels(record.model)
    failure: UpstreamError | None = None
    try:
        async for chunk in UpstreamClient.iter_chunks(replica, response):
            for event in splitter.feed(chunk):
                data = event_data(event)
                if data is None:
                    continue  # comments and keep-alives carry nothing for the client
                if data == DONE_PAYLOAD:
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
                    yield event
                    yield DONE_EVENT
                    record.outcome = "upstream"
                    record.error_type = "upstream_error"
                    return
                choices = payload.get("choices")
                usage = payload.get("usage")
                if isinstance(usage, dict):
                    record.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                    record.completion_tokens = int(usage.get("completion_tokens") or 0)
                    if not choices and not client_wants_usage:
                        continue
                if choices and _has_content(choices):
                    now = time.perf_counter()
                    if last_content_at is None:
                        record.ttft_s = now - record.started
                    else:
                        itl_child.observe(now - last_content_at)
                    last_content_at = now
                yield event
            if failure is not None:
                break
        else:
            failure = UpstreamError(
                f"Replica '{replica.id}' ended the stream without [DONE]. Retry the request.",
                kind="disconnect",
            )
    except UpstreamError as error:
        failure = error
    if failure is not None:
        yield error_event(failure.message, failure.error_type, failure.kind)
        yield DONE_EVENT
        raise StreamFailure(failure)
