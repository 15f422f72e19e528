"""Output checks on a stream: a sliding window, a bounded hold, and a cut.

Chunks are held until ``hold_chars`` new characters can be checked together, or until the
oldest held chunk has waited ``max_hold_s`` — the most the gate delays any chunk, the first
included, beyond the checks' own time. Each check sees the new text plus up to
``window_chars`` of text before it, so a term split across chunks is found. When a check
refuses, the held chunks are dropped and the stream ends with an in-band
``content_policy_violation`` error event and ``[DONE]``; the upstream exchange is closed, so
the engine stops generating.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tidegate.observability.capture import ResponseCapture
from tidegate.observability.records import RequestRecord
from tidegate.protocol.sse import DONE_EVENT, error_event
from tidegate.safety.refusal import Refusal, mark_cut

__all__ = ["StreamWindow", "guard_stream"]


@dataclass(frozen=True, slots=True)
class StreamWindow:
    window_chars: int
    hold_chars: int
    max_hold_s: float


_END = object()


async def _next(events: AsyncIterator[bytes]) -> Any:
    try:
        return await anext(events)
    except StopAsyncIteration:
        return _END


async def guard_stream(
    events: AsyncGenerator[bytes, None],
    record: RequestRecord,
    capture: ResponseCapture,
    window: StreamWindow,
    check: Callable[[str], Awaitable[Refusal | None]],
) -> AsyncGenerator[bytes, None]:
    pending: list[bytes] = []
    held_since = 0.0
    seen = 0  # capture.texts already taken into the window
    seen_calls: dict[int, int] = {}  # per tool call, its argument pieces already taken
    checked = ""  # the tail of the text already checked
    fresh = ""  # text not yet checked
    fetch: asyncio.Future[Any] | None = None
    hold_chars, max_hold_s, window_chars = window.hold_chars, window.max_hold_s, window.window_chars
    try:
        while True:
            if fetch is not None and not pending:
                event, fetch = await fetch, None  # the read a released hold left waiting
            elif not pending:
                event = await _next(events)  # the common case: no task, no timer
            else:
                if fetch is None:
                    fetch = asyncio.ensure_future(_next(events))
                left = held_since + max_hold_s - time.perf_counter()
                if left > 0:
                    await asyncio.wait((fetch,), timeout=left)
                if not fetch.done():
                    event = None  # the hold ran out: check and release what is held
                else:
                    event, fetch = fetch.result(), None
            done = event is DONE_EVENT or event is _END
            if isinstance(event, bytes) and not done:
                if not pending:
                    held_since = time.perf_counter()
                pending.append(event)
                texts = capture.texts
                if len(texts) > seen:
                    fresh += "".join(texts[seen:])
                    seen = len(texts)
                if capture.tool_calls:  # their arguments are checked like the content
                    for index, parts in capture.tool_calls.items():
                        taken = seen_calls.get(index, 1)  # parts[0] is the function's name
                        if len(parts) > taken:
                            fresh += "".join(parts[taken:])
                            seen_calls[index] = len(parts)
                if len(fresh) < hold_chars and time.perf_counter() - held_since < max_hold_s:
                    continue
            if fresh:
                text = checked + fresh
                refusal = await check(text)
                if refusal is not None:
                    mark_cut(record, refusal)
                    record.completion_tokens = max(
                        record.completion_tokens, sum(1 for piece in capture.texts if piece)
                    )
                    yield error_event(
                        refusal.message(), "invalid_request_error", "content_policy_violation"
                    )
                    yield DONE_EVENT
                    return
                checked = text[-window_chars:]
                fresh = ""
            if pending:
                yield pending[0] if len(pending) == 1 else b"".join(pending)
                pending = []
            if event is _END:
                return
            if event is DONE_EVENT:
                yield DONE_EVENT
    finally:
        if fetch is not None:
            fetch.cancel()
            with contextlib.suppress(BaseException):
                await fetch
        await events.aclose()
