"""The relay sends the events of one upstream read as one piece, and [DONE] on its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram

from tidegate.observability.records import RequestRecord
from tidegate.pipeline.relay import StreamFailure, relay_events
from tidegate.protocol.sse import DONE_EVENT

ROLE = b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
TOKEN = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'


async def _reads(*reads: bytes) -> AsyncIterator[bytes]:
    for read in reads:
        yield read


def _relay(*reads: bytes, wants_usage: bool = False) -> tuple[list[bytes], RequestRecord, Any]:
    record = RequestRecord(request_id="r1", route="chat")
    itl = Histogram("itl_seconds", "itl", ["model"], registry=CollectorRegistry())

    async def run() -> tuple[list[bytes], BaseException | None]:
        pieces: list[bytes] = []
        try:
            async for piece in relay_events(
                replica=SimpleNamespace(id="a"),  # type: ignore[arg-type]
                chunks=_reads(*reads),
                record=record,
                client_wants_usage=wants_usage,
                itl=itl,
            ):
                pieces.append(piece)
        except StreamFailure as failure:
            return pieces, failure
        return pieces, None

    pieces, failure = asyncio.run(run())
    return pieces, record, failure


def test_one_piece_per_read_and_done_alone() -> None:
    pieces, record, failure = _relay(ROLE + TOKEN, TOKEN, TOKEN + USAGE + DONE_EVENT)
    assert failure is None
    assert pieces == [ROLE + TOKEN, TOKEN, TOKEN, DONE_EVENT]
    assert pieces[-1] is DONE_EVENT  # the endpoint meters on it by identity
    assert (record.prompt_tokens, record.completion_tokens) == (3, 2)
    assert record.ttft_s is not None


def test_usage_kept_when_the_client_asked() -> None:
    pieces, _, _ = _relay(TOKEN + USAGE + DONE_EVENT, wants_usage=True)
    assert pieces == [TOKEN + USAGE, DONE_EVENT]


def test_events_before_a_broken_one_still_go_out() -> None:
    pieces, record, failure = _relay(TOKEN, TOKEN + b"data: {not json\n\n" + TOKEN)
    assert isinstance(failure, StreamFailure) and failure.kind == "protocol"
    assert pieces[0] == TOKEN
    assert pieces[1].startswith(TOKEN + b'data: {"error"')
    assert pieces[-1] is DONE_EVENT
    assert record.completion_tokens == 2


@pytest.mark.parametrize("tail", [b"", TOKEN])
def test_engine_error_relayed_with_what_came_before(tail: bytes) -> None:
    error = b'data: {"error":{"message":"boom"}}\n\n'
    pieces, record, failure = _relay(TOKEN + error + tail)
    assert failure is None
    assert pieces == [TOKEN + error, DONE_EVENT]
    assert record.outcome == "upstream"
