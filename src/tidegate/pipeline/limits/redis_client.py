"""The Redis client of the limit store: a bounded pool, connects with their own timeout and
retries, warmed before the gateway says it is ready.

Connecting is not an operation. A new connection (TCP, TLS, the client handshake, a PING) may
take ``connect_timeout_s`` and is retried with jittered exponential backoff, because nothing has
been sent yet: a retry cannot run a script twice. Commands keep ``timeout_s`` and are never
retried (a script whose reply was lost may have reserved already). The pool is blocking and
bounded: a burst of N requests waits for one of ``max_connections`` warm connections instead
of opening N new ones at once (which, with the operation timeout applied to connecting, made a
freshly started gateway answer half of a burst with ``limiter_unavailable``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.connection import (
    AbstractConnection,
    BlockingConnectionPool,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

_log = logging.getLogger(__name__)
_BACKOFF_BASE_S = 0.05
_BACKOFF_CAP_S = 1.0


class _ConnectsPatiently(AbstractConnection):
    """A connection whose connect (handshake and a PING included) has its own timeout and
    retries; its commands keep the operation timeout."""

    connect_timeout_s: float = 1.0
    connect_retries: int = 2

    async def connect(self) -> None:
        if self.is_connected:
            return
        operation_timeout = self.socket_timeout
        # The client handshake reads replies with socket_timeout: give it the connect's time.
        self.socket_timeout = self.connect_timeout_s
        try:
            retry = Retry(
                ExponentialWithJitterBackoff(cap=_BACKOFF_CAP_S, base=_BACKOFF_BASE_S),
                self.connect_retries,
            )
            await retry.call_with_retry(self._connect_and_ping, self._failed)
        finally:
            self.socket_timeout = operation_timeout

    async def _connect_and_ping(self) -> None:
        await super().connect()  # type: ignore[no-untyped-call]  # one attempt, no Retry
        await self.send_command("PING", check_health=False)
        await self.read_response(timeout=self.connect_timeout_s)

    async def _failed(self, error: BaseException) -> None:
        _log.debug("connecting to Redis failed (%s); retrying", type(error).__name__)
        await self.disconnect()


class _Tcp(_ConnectsPatiently, Connection):
    pass


class _Tls(_ConnectsPatiently, SSLConnection):
    pass


class _Unix(_ConnectsPatiently, UnixDomainSocketConnection):
    pass


_BY_SCHEME: dict[str, type[AbstractConnection]] = {"redis": _Tcp, "rediss": _Tls, "unix": _Unix}


def connect_redis(
    url: str,
    *,
    timeout_s: float,
    connect_timeout_s: float,
    connect_retries: int,
    max_connections: int,
) -> aioredis.Redis:
    """A client on a bounded, blocking pool (no connection is opened yet: see ``warm``)."""
    scheme = urlsplit(url).scheme
    base = _BY_SCHEME.get(scheme)
    if base is None:
        raise ValueError(
            f"limits.redis_url must start with redis://, rediss:// or unix://, not {scheme}://"
        )
    connection_class: type[Any] = type(
        base.__name__,
        (base,),
        {"connect_timeout_s": connect_timeout_s, "connect_retries": connect_retries},
    )
    pool = BlockingConnectionPool.from_url(
        url,
        connection_class=connection_class,
        max_connections=max_connections,
        # Waiting for a busy pool's next free connection: as long as opening one may take.
        timeout=connect_timeout_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=connect_timeout_s,
        retry=Retry(NoBackoff(), 0),  # commands: never retried
        health_check_interval=0,
    )
    return aioredis.Redis.from_pool(pool)


async def warm(client: aioredis.Redis, connections: int) -> int:
    """Open up to ``connections`` pooled connections at once; returns how many are open.

    Failures are logged, not raised: the gateway starts, /readyz reports the limit store down,
    and the health check warms the pool when Redis answers."""
    pool = client.connection_pool
    taken: list[AbstractConnection] = []

    async def take() -> None:
        taken.append(await pool.get_connection())  # type: ignore[no-untyped-call]

    results = await asyncio.gather(*(take() for _ in range(connections)), return_exceptions=True)
    for connection in taken:
        await pool.release(connection)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        _log.warning(
            "opened %d of %d Redis connections for the limit store (%s); the rest open on use",
            len(taken),
            connections,
            type(errors[0]).__name__,
        )
    return len(taken)


async def ping(client: aioredis.Redis) -> None:
    """Raises when Redis does not answer (a health check: may reconnect)."""
    try:
        await client.ping()  # type: ignore[misc]  # typed for the sync and async clients
    except (RedisConnectionError, RedisTimeoutError, OSError) as error:
        raise ConnectionError(f"Redis: {type(error).__name__}") from error


async def drop_idle(client: aioredis.Redis) -> None:
    """Close the pool's idle connections (after Redis came back, they may be dead ones)."""
    await client.connection_pool.disconnect(inuse_connections=False)
