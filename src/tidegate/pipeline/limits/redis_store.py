"""The Redis limit store, shared by every gateway replica: one EVALSHA per admit and per settle.

All of a tenant's keys (its buckets, its keys' buckets, leases and budgets) carry the tenant id
as a hash tag, ``{tenant}``, so each script touches one slot and would run on Redis Cluster.
Redis errors are translated here: a connection that fails or answers slower than the timeout
becomes ``LimitStoreUnavailable``; the limiter applies the tenant's failure mode. Commands are
never retried, because a script that ran before its reply was lost would reserve twice. After
a failure the store does not try Redis again for ``cooldown_s``, so a Redis that hangs costs
the request path one timeout, not one per request; the health check (``ping``, run by the
gateway's dependency monitor and /readyz) ends the cooldown as soon as Redis answers again.
Connections are pooled, opened at start-up and after an outage (:mod:`redis_client`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import SQLAlchemyError

from tidegate.pipeline.limits import lua, redis_client
from tidegate.pipeline.limits.leases import LeaseRenewer
from tidegate.pipeline.limits.model import (
    KEY_CONCURRENCY,
    KEY_TPM,
    TENANT_CONCURRENCY,
    TENANT_TPM,
    UNBOUNDED,
    Demand,
    LimitStoreUnavailable,
    Verdict,
)
from tidegate.pipeline.limits.periods import Period
from tidegate.pipeline.limits.rebuild import DAY, REBUILT_COUNTERS, UsageSource, measure
from tidegate.pipeline.limits.redis_client import connect_redis

_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError, TimeoutError)
_BUDGET_GRACE_S = 3600
"""Budget counters outlive their period by this much, so late settles still find them."""
_CACHE_MAX = 65_536
_REBUILDS = 3
"""Admit attempts when counters are missing: a rebuild, then again (lost twice: unavailable)."""
_Handle = tuple[tuple[str, ...], str, tuple[bytes, bytes, bytes, bytes]]
"""Keys, admission id, and the counters' generations and seed ids at admission."""

log = logging.getLogger(__name__)


class RedisLimitStore:
    def __init__(
        self,
        *,
        url: str,
        timeout_s: float,
        key_prefix: str,
        connect_timeout_s: float = 1.0,
        connect_retries: int = 2,
        max_connections: int = 32,
        lease_s: float = 6.0,
        renew_every_s: float = 1.5,
        usage: UsageSource | None = None,
        cooldown_s: float = 0.5,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """``timeout_s``: one script's round trip. ``connect_timeout_s``, ``connect_retries``,
        ``max_connections``: see :mod:`redis_client`. ``lease_s``: how long a concurrency slot
        outlives a gateway that died holding it; the gateway renews its leases every
        ``renew_every_s``. ``usage``: the usage records lost counters are rebuilt from (None:
        they start from zero, for tests and tools only).
        ``clock``: tests only; by default Redis's TIME."""
        self._redis = connect_redis(
            url,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            connect_retries=connect_retries,
            max_connections=max_connections,
        )
        self._max_connections = max_connections
        self._admit = self._redis.register_script(lua.ADMIT)
        self._settle = self._redis.register_script(lua.SETTLE)
        self._seed = self._redis.register_script(lua.SEED)
        self._usage = usage
        self._rebuilds: dict[tuple[str, str], asyncio.Future[None]] = {}
        self.rebuilt = dict.fromkeys(REBUILT_COUNTERS.values(), 0)
        """Counters rebuilt from the usage records, by kind (read by the metrics)."""
        self._leases = LeaseRenewer(
            redis=self._redis, lease_s=lease_s, every_s=renew_every_s, now=self._now
        )
        self._prefix = key_prefix
        self._lease = str(lease_s)
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._down_until = 0.0
        self._was_down = False
        # Admission ids (concurrency lease members): unique across gateway replicas.
        self._instance = os.urandom(8).hex()
        self._ids = itertools.count()
        self._keys: dict[tuple[str, str, str, str], tuple[str, ...]] = {}

    async def admit(self, demand: Demand) -> Verdict:
        d = demand
        keys = self._keys_of(d.tenant_id, d.key_id, d.day.key, d.month.key)
        member = f"{self._instance}:{next(self._ids)}"
        args = (
            *d.limits,
            *d.budget,
            d.prompt_tokens,
            d.max_tokens,
            d.prompt_cost,
            repr(d.output_cost),
            repr(d.day.end),
            repr(d.month.end),
            member,
            self._lease,
            self._now(),
            d.sequences,
            UNBOUNDED,
        )
        for _ in range(_REBUILDS):
            reply = await self._call(self._admit, keys, args)  # numbers as int, else bytes
            if reply[0] != 2:
                break
            await self._rebuild(d, keys, int(reply[1]))  # a counter is lost: never read as 0
        else:
            raise LimitStoreUnavailable("limit counters were lost again while being rebuilt")
        levels = (float(reply[3]), float(reply[4]), float(reply[5]), float(reply[6]))
        if reply[0] != 1:
            return Verdict(False, 0, 0, levels, int(reply[7]), float(reply[8]))
        leases = tuple(
            keys[i]
            for i, limit in ((2, d.limits[TENANT_CONCURRENCY]), (5, d.limits[KEY_CONCURRENCY]))
            if limit
        )
        if leases:
            self._leases.hold(d.tenant_id, member, leases)
        ids = (reply[9], reply[10], reply[11], reply[12])
        return Verdict(True, int(reply[1]), int(reply[2]), levels, handle=(keys, member, ids))

    async def settle(self, demand: Demand, verdict: Verdict, *, tokens: int, cost: int) -> None:
        d = demand
        handle: _Handle = verdict.handle  # type: ignore[assignment]
        keys, member, ids = handle
        self._leases.release(d.tenant_id, member)  # settled or not, it is renewed no more
        args = (
            d.limits[TENANT_TPM],
            d.limits[KEY_TPM],
            d.prompt_tokens + verdict.completion - tokens,
            cost - verdict.cost,
            member,
            _flag(d.limits[TENANT_CONCURRENCY]),
            _flag(d.limits[KEY_CONCURRENCY]),
            _flag(d.budget[0] or d.budget[1]),  # the day's budget is counted
            _flag(d.budget[2] or d.budget[3]),  # the month's
            self._now(),
            tokens,
            cost,
            *ids,
        )
        await self._call(self._settle, keys, args)

    async def seed_spend(self, *, tenant_id: str, period: Period, tokens: int, cost: int) -> None:
        key = f"{self._prefix}:{{{tenant_id}}}:b:{period.key}"
        expiry = int(period.end) + _BUDGET_GRACE_S
        args = (DAY, os.urandom(6).hex(), self._now(), 0, 0, 0, 0, tokens, cost, expiry, 0, 0, 0)
        await self._call(self._seed, (key, key, key, key), args)

    @property
    def leases(self) -> LeaseRenewer:
        return self._leases

    async def renew_leases(self) -> int:
        """Renew this gateway's concurrency leases now (the background task does it every
        ``renew_every_s``); returns how many."""
        return await self._leases.renew()

    async def _rebuild(self, demand: Demand, keys: tuple[str, ...], mask: int) -> None:
        """Rebuild the lost counters in ``mask``; concurrent admits of one tenant and key on
        this gateway share one rebuild (and gateways racing each other: SEED keeps the first)."""
        flight = (demand.tenant_id, demand.key_id)
        pending = self._rebuilds.get(flight)
        if pending is None:
            pending = asyncio.ensure_future(self._seed_lost(demand, keys, mask))
            self._rebuilds[flight] = pending
            pending.add_done_callback(lambda _: self._rebuilds.pop(flight, None))
        await asyncio.shield(pending)

    async def _seed_lost(self, d: Demand, keys: tuple[str, ...], mask: int) -> None:
        try:
            used = await measure(self._usage, d, mask)
        except (SQLAlchemyError, OSError, TimeoutError) as error:
            raise LimitStoreUnavailable(
                f"limit counters of tenant {d.tenant_id} are missing in Redis and the usage "
                f"records to rebuild them from cannot be read: {type(error).__name__}: {error}"
            ) from error
        args = (
            mask,
            os.urandom(6).hex(),
            self._now(),
            d.limits[TENANT_TPM],
            used.tenant_tpm_used,
            d.limits[KEY_TPM],
            used.key_tpm_used,
            *used.day,
            int(d.day.end) + _BUDGET_GRACE_S,
            *used.month,
            int(d.month.end) + _BUDGET_GRACE_S,
        )
        reply = await self._call(self._seed, (keys[1], keys[4], keys[6], keys[7]), args)
        seeded = int(reply)  # type: ignore[call-overload]  # SEED answers a number
        for bit, kind in REBUILT_COUNTERS.items():
            if seeded & bit:
                self.rebuilt[kind] += 1
        if seeded:
            # Also every new day and a tenant's first request: only a non-zero rebuild is news.
            nonzero = used.tenant_tpm_used or used.key_tpm_used or used.day[0] or used.month[0]
            log.log(
                logging.INFO if nonzero else logging.DEBUG,
                "limit counters of tenant %s were missing in Redis (restart, eviction, new "
                "period); rebuilt from the usage records: day %d tokens, month %d tokens, "
                "tokens in the last minute %d (tenant) and %d (key %s)",
                d.tenant_id,
                used.day[0],
                used.month[0],
                used.tenant_tpm_used,
                used.key_tpm_used,
                d.key_id,
            )

    async def start(self) -> None:
        """Open the pool's connections before the gateway takes traffic (never raises)."""
        await redis_client.warm(self._redis, self._max_connections)

    async def ping(self) -> None:
        """A health check; raises ConnectionError while Redis does not answer. A failed
        check stops the request path from trying Redis (each request fails fast into its
        tenant's failure mode instead of waiting on connects) until a check succeeds; that
        ends the cooldown at once and refills the pool with fresh connections (those from
        before an outage are dead)."""
        try:
            await redis_client.ping(self._redis)
        except BaseException:  # no answer, or none within the prober's time (cancelled)
            self._was_down = True
            self._down_until = math.inf
            raise
        if self._was_down:
            self._was_down = False
            await redis_client.drop_idle(self._redis)
            await redis_client.warm(self._redis, self._max_connections)
        self._down_until = 0.0

    async def aclose(self) -> None:
        await self._leases.aclose()
        await self._redis.aclose()

    async def _call(self, script: object, keys: Sequence[str], args: Sequence[object]) -> list[Any]:
        if self._down_until and time.monotonic() < self._down_until:
            raise LimitStoreUnavailable("Redis failed moments ago; not retrying yet")
        try:
            reply = await script(keys=keys, args=args)  # type: ignore[operator]
        except _UNAVAILABLE as error:
            self._down_until = time.monotonic() + self._cooldown_s
            self._was_down = True  # the next successful health check renews the pool
            raise LimitStoreUnavailable(f"{type(error).__name__}: {error}") from error
        self._down_until = 0.0
        return reply  # type: ignore[no-any-return]

    def _now(self) -> str:
        return "" if self._clock is None else repr(self._clock())

    def _keys_of(self, tenant_id: str, key_id: str, day: str, month: str) -> tuple[str, ...]:
        cache_key = (tenant_id, key_id, day, month)
        keys = self._keys.get(cache_key)
        if keys is None:
            if len(self._keys) >= _CACHE_MAX:
                self._keys.clear()  # periods rolled over, or very many keys: start afresh
            t = f"{self._prefix}:{{{tenant_id}}}"
            k = f"{t}:k:{key_id}"
            keys = self._keys[cache_key] = (
                f"{t}:rpm",
                f"{t}:tpm",
                f"{t}:conc",
                f"{k}:rpm",
                f"{k}:tpm",
                f"{k}:conc",
                f"{t}:b:{day}",
                f"{t}:b:{month}",
            )
        return keys


def _flag(value: int) -> str:
    return "1" if value else "0"
