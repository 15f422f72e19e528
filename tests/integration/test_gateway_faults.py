"""Upstream faults and client disconnects, streamed and not."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import orjson

from tests.support.gateway import ADMIN_KEY, RunningGateway, free_port, run_gateway
from tidegate_testing.fake_server import FakeUpstream

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


async def _stream_events(gateway: RunningGateway) -> tuple[int, list[bytes]]:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{gateway.base_url}/chat/completions", json={**CHAT, "stream": True}, headers=AUTH
        ) as response:
            raw = await response.read()
    return response.status, [e for e in raw.split(b"\n\n") if e]


async def test_upstream_500_becomes_502(gateway: RunningGateway, fake: FakeUpstream) -> None:
    fake.behaviour.fault = "status_500"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gateway.base_url}/chat/completions", json=CHAT, headers=AUTH) as r:
            body = await r.json()
            assert r.status == 502
    assert body["error"]["type"] == "upstream_error"
    assert "HTTP 500" in body["error"]["message"]
    assert gateway.access_lines()[-1]["outcome"] == "upstream"


async def test_hung_upstream_times_out_with_504(
    gateway: RunningGateway, fake: FakeUpstream
) -> None:
    fake.behaviour.fault = "hang"
    started = time.monotonic()
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gateway.base_url}/chat/completions", json=CHAT, headers=AUTH) as r:
            body = await r.json()
            assert r.status == 504
    assert body["error"]["type"] == "timeout_error"
    assert time.monotonic() - started < 5  # idle_timeout_s is 2 s in the fixture
    assert gateway.access_lines()[-1]["outcome"] == "timeout"


async def test_stream_dropped_mid_way_ends_with_in_band_error_and_done(
    gateway: RunningGateway, fake: FakeUpstream
) -> None:
    fake.behaviour.tokens = 10
    fake.behaviour.fault = "drop_mid_stream"
    fake.behaviour.fault_after_tokens = 3
    status, events = await _stream_events(gateway)
    assert status == 200
    assert events[-1] == b"data: [DONE]"
    error = orjson.loads(events[-2].removeprefix(b"data: "))
    assert error["error"]["type"] == "upstream_error"
    chunks = [orjson.loads(e.removeprefix(b"data: ")) for e in events[:-2]]
    # No finish_reason is invented for a stream that did not finish.
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)
    assert gateway.access_lines()[-1]["outcome"] == "upstream"


async def test_malformed_sse_ends_with_in_band_error(
    gateway: RunningGateway, fake: FakeUpstream
) -> None:
    fake.behaviour.tokens = 10
    fake.behaviour.fault = "malformed_sse"
    fake.behaviour.fault_after_tokens = 2
    status, events = await _stream_events(gateway)
    assert status == 200
    assert events[-1] == b"data: [DONE]"
    assert b"malformed" in events[-2]
    assert all(b"{not json" not in e for e in events)


async def test_slow_first_token_is_measured_as_ttft(
    gateway: RunningGateway, fake: FakeUpstream
) -> None:
    fake.behaviour.first_token_delay_s = 0.3
    fake.behaviour.tokens = 3
    status, events = await _stream_events(gateway)
    assert status == 200 and events[-1] == b"data: [DONE]"
    line = gateway.access_lines()[-1]
    assert line["ttft_ms"] >= 290


async def _disconnect_after_first_bytes(gateway: RunningGateway, body: dict[str, object]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", int(gateway.url.rsplit(":", 1)[1]))
    payload = orjson.dumps(body)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {ADMIN_KEY}\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    await writer.drain()
    if body.get("stream"):
        await reader.readuntil(b"data: ")  # the stream has started
    else:
        await asyncio.sleep(0.3)  # the upstream is working on it
    writer.close()


async def test_client_disconnect_mid_stream_aborts_upstream(
    gateway: RunningGateway, fake: FakeUpstream
) -> None:
    fake.behaviour.tokens = 1000
    fake.behaviour.token_delay_s = 0.05
    await _disconnect_after_first_bytes(gateway, {**CHAT, "stream": True})
    assert await fake.wait_idle(timeout=1.0), "upstream request still running 1 s after disconnect"
    assert fake.cancelled == 1
    await asyncio.sleep(0.05)
    assert gateway.access_lines()[-1]["outcome"] == "client_closed"


async def test_client_disconnect_while_waiting_aborts_upstream(
    gateway: RunningGateway, fake: FakeUpstream
) -> None:
    fake.behaviour.first_token_delay_s = 30
    await _disconnect_after_first_bytes(gateway, CHAT)
    assert await fake.wait_idle(timeout=1.0), "upstream request still running 1 s after disconnect"
    assert fake.cancelled == 1
    await asyncio.sleep(0.05)
    assert gateway.access_lines()[-1]["outcome"] == "client_closed"


async def test_unreachable_upstream_is_502_and_other_replica_takes_over(tmp_path: Path) -> None:
    live = FakeUpstream(model="fake-model")
    await live.start()
    dead = FakeUpstream(model="fake-model", port=free_port())  # never started: refuses
    try:
        async with run_gateway(tmp_path, upstreams=[dead, live]) as gateway:
            async with aiohttp.ClientSession() as http:
                for _ in range(6):
                    async with http.post(
                        f"{gateway.base_url}/chat/completions", json=CHAT, headers=AUTH
                    ) as r:
                        assert r.status == 200  # connect failures are retried elsewhere
            assert len(live.requests) == 6
        async with run_gateway(tmp_path / "solo", upstreams=[dead]) as gateway:
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    f"{gateway.base_url}/chat/completions", json=CHAT, headers=AUTH
                ) as r:
                    body = await r.json()
                    assert r.status == 502
            assert "Could not reach replica" in body["error"]["message"]
    finally:
        await live.stop()
