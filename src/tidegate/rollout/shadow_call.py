"""One mirrored request: send the primary's request to a replica of the shadow pool through
its provider's exchange, always as a stream with usage, and measure its answer (TTFT, ITL,
E2E, tokens, the captured text).

The shadow bypasses everything the primary goes through for the tenant (limits, budgets, the
scheduler's queues) and everything that protects the primary (retries, outlier ejection,
circuit breakers): its failures are results to compare, so they are returned, never raised.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from tidegate.errors import NoReadyReplicaError, UpstreamError
from tidegate.observability.capture import ResponseCapture
from tidegate.pipeline.relay import has_content
from tidegate.protocol.requests import CompletionRequest
from tidegate.protocol.sse import DONE_PAYLOAD, SSESplitter, event_data
from tidegate.rollout.compare import Side
from tidegate.routing.replicas import Pool
from tidegate.scheduling import ENGINE_PRIORITY
from tidegate.upstream.exchange import Provider

CallOutcome = Literal["ok", "error", "timeout"]


@dataclass(frozen=True, slots=True)
class ShadowResult:
    side: Side
    replica: str | None
    """The shadow replica's id; None when none could be picked."""
    outcome: CallOutcome


@dataclass(slots=True)
class _Progress:
    """What the stream told so far."""

    started: float
    capture: ResponseCapture = field(default_factory=ResponseCapture)
    first_content: float | None = None
    last_content: float | None = None
    content_chunks: int = 0
    prompt_tokens: int = 0
    completion_tokens: int | None = None

    def content(self, now: float) -> None:
        if self.first_content is None:
            self.first_content = now
        self.last_content = now
        self.content_chunks += 1

    def side(self, error: str | None) -> Side:
        first, last, n = self.first_content, self.last_content, self.content_chunks
        itl = None
        if first is not None and last is not None and n >= 2:
            itl = (last - first) / (n - 1)
        tokens = self.completion_tokens
        return Side(
            ttft_s=None if first is None else first - self.started,
            itl_s=itl,
            e2e_s=time.perf_counter() - self.started,
            error=error,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.content_chunks if tokens is None else tokens,
            capture=self.capture,
        )


def shadow_request(request: CompletionRequest) -> CompletionRequest:
    """The primary's request as its shadow sends it: streamed with usage (a shallow copy; the
    primary's own request is untouched)."""
    options = request.get("stream_options")
    return request.derive(
        stream=True,
        stream_options={**(options if isinstance(options, dict) else {}), "include_usage": True},
    )


async def call_shadow(
    *,
    pool: Pool,
    providers: dict[str, Provider],
    request: CompletionRequest,
    request_id: str,
    timeout_s: float,
) -> ShadowResult:
    """``request``: a ``shadow_request``. It goes as the replica's model, at the lowest engine
    priority where the engine schedules by priority (live traffic first)."""
    progress = _Progress(started=time.perf_counter())
    try:
        replica = pool.pick()
    except NoReadyReplicaError:
        return ShadowResult(progress.side("no_ready_replica"), None, "error")
    try:
        async with asyncio.timeout(timeout_s):
            # The exchange holds the replica's lease: the balancer sees the shadow's load
            # like any other, and it ends however the call does.
            response = await providers[replica.provider].open(
                replica,
                request,
                model=pool.upstream_model or replica.upstream_model,
                priority=ENGINE_PRIORITY["batch"] if replica.priority_scheduling else None,
                request_id=request_id,
            )
            finished = False
            try:
                error = await _read_stream(response.chunks(), progress)
                finished = error is None
            finally:
                response.close(reuse=finished)
    except TimeoutError:
        return ShadowResult(progress.side("timeout"), replica.id, "timeout")
    except UpstreamError as failure:
        outcome: CallOutcome = "timeout" if failure.kind == "timeout" else "error"
        return ShadowResult(progress.side(failure.kind), replica.id, outcome)
    return ShadowResult(progress.side(error), replica.id, "ok" if error is None else "error")


async def _read_stream(chunks: AsyncIterator[bytes], progress: _Progress) -> str | None:
    splitter = SSESplitter()
    async for chunk in chunks:
        for event in splitter.feed(chunk):
            data = event_data(event)
            if data is None:
                continue
            if data == DONE_PAYLOAD:
                return None
            try:
                message = orjson.loads(data)
            except orjson.JSONDecodeError:
                return "protocol"
            if not isinstance(message, dict):
                return "protocol"
            if "error" in message:
                return "upstream_error"
            _take(message, progress)
    return "disconnect"  # ended without [DONE]


def _take(message: dict[str, Any], progress: _Progress) -> None:
    usage = message.get("usage")
    if isinstance(usage, dict):
        progress.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        progress.completion_tokens = int(usage.get("completion_tokens") or 0)
    choices = message.get("choices")
    if not isinstance(choices, list) or not choices:
        return
    if has_content(choices):
        progress.content(time.perf_counter())
    progress.capture.add_stream_choices(choices)
