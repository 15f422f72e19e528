"""The limit store's Redis client against a redis-server of the test's own: connecting has its
own timeout (slower than a command may be), commands are never retried, and the pool is
warmed and bounded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import TimeoutError as RedisTimeoutError

from tests.support.own_servers import OwnRedis, SlowConnectProxy, own_redis
from tidegate.pipeline.limits.redis_client import connect_redis, warm

# INCR, then keep Redis busy for 0.5 s: longer than the client's 0.25 s command timeout.
SLOW_INCR = """
redis.call('INCR', KEYS[1])
local t = redis.call('TIME')
repeat
  local n = redis.call('TIME')
until (n[1] - t[1]) * 1000000 + (n[2] - t[2]) > 500000
return 1
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[OwnRedis]:
    with own_redis(tmp_path) as redis_server:
        yield redis_server


def client(url: str, *, max_connections: int = 4) -> aioredis.Redis:
    return connect_redis(
        url, timeout_s=0.25, connect_timeout_s=1.0, connect_retries=2,
        max_connections=max_connections,
    )  # fmt: skip


async def test_a_connect_slower_than_a_command_may_be_succeeds(server: OwnRedis) -> None:
    async with SlowConnectProxy(server.port, delay_s=0.4) as proxy:
        slow = client(proxy.url)
        try:
            started = time.monotonic()
            assert await slow.incr("n") == 1  # connect (0.4 s) under 1 s, then the command
            assert time.monotonic() - started >= 0.4
            assert await slow.incr("n") == 2  # the pooled connection: no new connect
            assert proxy.connections == 1
        finally:
            await slow.aclose()


async def test_a_command_whose_reply_is_late_is_not_sent_again(server: OwnRedis) -> None:
    redis_client = client(server.url)
    try:
        with pytest.raises(RedisTimeoutError):
            await redis_client.eval(SLOW_INCR, 1, "counted")
        await asyncio.sleep(0.5)  # the script finishes in Redis
        assert int(await redis_client.get("counted")) == 1  # ran once: no retry
    finally:
        await redis_client.aclose()


async def test_warm_opens_the_pool_and_a_burst_reuses_it(server: OwnRedis) -> None:
    async with SlowConnectProxy(server.port, delay_s=0.3) as proxy:
        pooled = client(proxy.url, max_connections=8)
        try:
            assert await warm(pooled, 8) == 8
            assert proxy.connections == 8
            results = await asyncio.gather(*(pooled.incr("burst") for _ in range(200)))
            assert sorted(results) == list(range(1, 201))
            assert proxy.connections == 8  # no connection opened during the burst
        finally:
            await pooled.aclose()


async def test_warm_reports_what_it_could_open_when_redis_is_down(tmp_path: Path) -> None:
    nowhere = OwnRedis(tmp_path)  # a free port, never started
    down = client(nowhere.url)
    try:
        assert await warm(down, 4) == 0  # logged, not raised: the gateway starts anyway
    finally:
        await down.aclose()
