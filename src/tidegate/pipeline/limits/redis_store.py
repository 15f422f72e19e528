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
from tidegate.pipeline.limits.layout import LAYOUT, Layout
from tidegate.pipeline.limits.leases import LeaseRenewer
from tidegate.pipeline.limits.model import UNBOUNDED, Demand, LimitStoreUnavailable, Verdict
from tidegate.pipeline.limits.periods import Period
from tidegate.pipeline.limits.rebuild import UsageSource, measure
from tidegate.pipeline.limits.redis_client import connect_redis

_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError, TimeoutError)
_BUDGET_GRACE_S = 3600
"""Budget counters outlive their period by this much, so late settles still find them."""
_CACHE_MAX = 65_536
_REBUILDS = 3
"""Admit attempts when counters are missing: a rebuild, then again (lost twice: unavailable)."""
_Handle = tuple[tuple[str, ...], str, tuple[bytes, ...]]
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
        layout: Layout = LAYOUT,
    ) -> None:
        """``timeout_s``: one script's round trip. ``connect_timeout_s``, ``connect_retries``,
        ``max_connections``: see :mod:`redis_client`. ``lease_s``: how long a concurrency slot
        outlives a gateway that died holding it; the gateway renews its leases every
        ``renew_every_s``. ``usage``: the usage records lost counters are rebuilt from (None:
        they start from zero, for tests and tools only).
        ``clock``: tests only; by default Redis's TIME. ``layout``: the kinds table's (tests
        declare their own; its scripts are generated here, the gateway's once at import)."""
        self._redis = connect_redis(
            url,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            connect_retries=connect_retries,
            max_connections=max_connections,
        )
        self._max_connections = max_connections
        own = layout is LAYOUT
        self._admit = self._redis.register_script(lua.ADMIT if own else lua.admit_script(layout))
        self._settle = self._redis.register_script(lua.SETTLE if own else lua.settle_script(layout))
        self._seed = self._redis.register_script(lua.SEED if own else lua.seed_script(layout))
        self._layout = layout
        self._suffixes = tuple(kind.name for kind in layout.rates)
        self._levels = len(layout.buckets)
        # The lease sets' checks: also their index in KEYS and their value in Demand.limits.
        self._lease_keys = layout.slots
        self._usage = usage
        self._rebuilds: dict[tuple[str, str], asyncio.Future[None]] = {}
        self.rebuilt = {counter.label: 0 for counter in layout.rebuilt}
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
        self._keys: dict[tuple[str, str, tuple[Period, ...]], tuple[str, ...]] = {}

    async def admit(self, demand: Demand) -> Verdict:
        d = demand
        keys = self._keys_of(d.tenant_id, d.key_id, d.periods)
        member = f"{self._instance}:{next(self._ids)}"
        args = (
            *d.limits,
            *d.budget,
            d.prompt_tokens,
            d.max_tokens,
            d.prompt_cost,
            repr(d.output_cost),
            *(repr(period.end) for period in d.periods),
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
        n = 3 + self._levels
        levels = [float(level) for level in reply[3:n]]
        if reply[0] != 1:
            return Verdict(False, 0, 0, levels, int(reply[n]), float(reply[n + 1]))
        leases = tuple(keys[i] for i in self._lease_keys if d.limits[i])
        if leases:
            self._leases.hold(d.tenant_id, member, leases)
        ids = tuple(reply[n + 2 :])
        return Verdict(True, int(reply[1]), int(reply[2]), levels, handle=(keys, member, ids))

    async def settle(self, demand: Demand, verdict: Verdict, *, tokens: int, cost: int) -> None:
        d = demand
        handle: _Handle = verdict.handle  # type: ignore[assignment]
        keys, member, ids = handle
        self._leases.release(d.tenant_id, member)  # settled or not, it is renewed no more
        args = (
            d.prompt_tokens + verdict.completion - tokens,
            cost - verdict.cost,
            member,
            self._now(),
            tokens,
            cost,
            *d.limits,
            *self._counted(d.budget),
            *ids,
        )
        await self._call(self._settle, keys, args)

    async def seed_spend(self, *, tenant_id: str, period: Period, tokens: int, cost: int) -> None:
        key = f"{self._prefix}:{{{tenant_id}}}:b:{period.key}"
        expiry = int(period.end) + _BUDGET_GRACE_S
        # SEED's first budget period names this one key: every counter's KEYS entry is it, and
        # only that period's bit is asked for.
        first = next(c for c in self._layout.rebuilt if c.period == 0)
        values: list[object] = []
        for counter in self._layout.rebuilt:
            if counter.check >= 0:
                values += (0, 0)
            elif counter is first:
                values += (tokens, cost, expiry)
            else:
                values += (0, 0, 0)
        args = (first.bit, os.urandom(6).hex(), self._now(), *values)
        await self._call(self._seed, (key,) * len(self._layout.rebuilt), args)

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
            used = await measure(self._usage, d, mask, self._layout)
        except (SQLAlchemyError, OSError, TimeoutError) as error:
            raise LimitStoreUnavailable(
                f"limit counters of tenant {d.tenant_id} are missing in Redis and the usage "
                f"records to rebuild them from cannot be read: {type(error).__name__}: {error}"
            ) from error
        values: list[object] = []
        for n, counter in enumerate(self._layout.rebuilt):
            if counter.check >= 0:
                values += (d.limits[counter.check], used.buckets[n])
            else:
                end = int(d.periods[counter.period].end) + _BUDGET_GRACE_S
                values += (*used.periods[counter.period], end)
        args = (mask, os.urandom(6).hex(), self._now(), *values)
        counters = tuple(keys[counter.key] for counter in self._layout.rebuilt)
        reply = await self._call(self._seed, counters, args)
        seeded = int(reply)  # type: ignore[call-overload]  # SEED answers a number
        for counter in self._layout.rebuilt:
            if seeded & counter.bit:
                self.rebuilt[counter.label] += 1
        if seeded:
            # Also every new day and a tenant's first request: only a non-zero rebuild is news.
            held = [
                f"{counter.label} {tokens} tokens"
                for n, counter in enumerate(self._layout.rebuilt)
                for tokens in (
                    used.buckets[n] if counter.check >= 0 else used.periods[counter.period][0],
                )
            ]
            log.log(
                logging.INFO if used.nonzero else logging.DEBUG,
                "limit counters of tenant %s (key %s) were missing in Redis (restart, eviction, "
                "new period); rebuilt from the usage records: %s",
                d.tenant_id,
                d.key_id,
                ", ".join(held),
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

    def _keys_of(self, tenant_id: str, key_id: str, periods: tuple[Period, ...]) -> tuple[str, ...]:
        cache_key = (tenant_id, key_id, periods)
        keys = self._keys.get(cache_key)
        if keys is None:
            if len(self._keys) >= _CACHE_MAX:
                self._keys.clear()  # periods rolled over, or very many keys: start afresh
            t = f"{self._prefix}:{{{tenant_id}}}"
            k = f"{t}:k:{key_id}"
            keys = self._keys[cache_key] = (
                *(f"{t}:{suffix}" for suffix in self._suffixes),
                *(f"{k}:{suffix}" for suffix in self._suffixes),
                *(f"{t}:b:{period.key}" for period in periods),
            )
        return keys

    def _counted(self, budget: tuple[int, ...]) -> tuple[str, ...]:
        """Per period, '1' when one of its budgets is set (the admission counted it)."""
        counted = ["0"] * len(self._layout.periods)
        for value, period in zip(budget, self._layout.budget_periods, strict=True):
            if value:
                counted[period] = "1"
        return tuple(counted)
