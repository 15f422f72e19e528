from __future__ import annotations

import orjson

from tidegate.protocol.sse import DONE_EVENT, SSESplitter, error_event, event_data


def test_splitter_returns_whole_events_across_arbitrary_chunk_boundaries() -> None:
    stream = b'data: {"a": 1}\n\ndata: {"b": 2}\n\n: keep-alive\n\n' + DONE_EVENT
    for size in (1, 2, 3, 7, 64):
        splitter = SSESplitter()
        events: list[bytes] = []
        for start in range(0, len(stream), size):
            events += splitter.feed(stream[start : start + size])
        assert events == [
            b'data: {"a": 1}\n\n',
            b'data: {"b": 2}\n\n',
            b": keep-alive\n\n",
            DONE_EVENT,
        ]
        assert splitter.pending == b""


def test_splitter_accepts_crlf_framing() -> None:
    assert SSESplitter().feed(b"data: 1\r\n\r\ndata: 2\r\n\r\n") == [b"data: 1\n\n", b"data: 2\n\n"]


def test_event_data_reads_single_and_multi_line_payloads() -> None:
    assert event_data(b'data: {"x":1}\n\n') == b'{"x":1}'
    assert event_data(b"data:[DONE]\n\n") == b"[DONE]"
    assert event_data(b"event: message\ndata: a\ndata: b\n\n") == b"a\nb"
    assert event_data(b": comment\n\n") is None


def test_error_event_is_openai_shaped() -> None:
    payload = orjson.loads(
        event_data(error_event("it broke", "upstream_error", "disconnect")) or b""
    )
    assert payload == {
        "error": {
            "message": "it broke",
            "type": "upstream_error",
            "param": None,
            "code": "disconnect",
        }
    }
