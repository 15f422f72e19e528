"""Cluster-wide admission: gateway replicas share each pool's capacity through Redis.

Every ``heartbeat_s`` one script call (``cluster_lua.SYNC``, one round trip for all pools)
renews this gateway's membership and trades its in-flight count for a grant; the grant becomes
the pool queue's capacity (``PoolQueue.set_share``). Requests never touch Redis for admission:
the queue's fast path, priority classes, interactive reserve and tenant fair share run locally
on the share, exactly as on one gateway. ``shares`` holds the arithmetic and why the sum of
what all gateways admit never exceeds the pool's capacity.

A gateway killed with -9 stops renewing: its lease runs out after ``member_ttl_s`` and the next
sync of any survivor drops it, its grant with it. A gateway that stops cleanly leaves at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from tidegate.background import Periodic
from tidegate.routing.replicas import Pool
from tidegate.scheduling.cluster_lua import LEAVE, SYNC
from tidegate.scheduling.pool_queue import PoolQueue
from tidegate.scheduling.scheduler import Scheduler
from tidegate.scheduling.shares import MODES, PoolShare

_log = logging.getLogger(__name__)


class ClusterMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.mode = Gauge(
            "tidegate_cluster_capacity_mode",
            "1 for how this gateway sizes its share of the pool: cluster (shared through "
            "Redis) or fallback (Redis unreachable: a conservative share).",
            ["pool", "mode"],
            registry=registry,
        )
        self.share = Gauge(
            "tidegate_cluster_share",
            "Slots of the pool this gateway admits at once (its share of the capacity).",
            ["pool"],
            registry=registry,
        )
        self.members = Gauge(
            "tidegate_cluster_members",
            "Gateway replicas sharing the pool at the last sync.",
            ["pool"],
            registry=registry,
        )
        self.syncs = Counter(
            "tidegate_cluster_syncs",
            "Share syncs with Redis (one round trip per heartbeat), by outcome.",
            ["outcome"],
            registry=registry,
        )


class ClusterCapacity:
    def __init__(
        self,
        *,
        scheduler: Scheduler,
        pools: Callable[[], list[Pool]],
        redis_url: str,
        key_prefix: str,
        heartbeat_s: float,
        member_ttl_s: float,
        fallback_members: int,
        timeout_s: float,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._scheduler = scheduler
        self._pools = pools
        self._redis = aioredis.Redis.from_url(
            redis_url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._sync = self._redis.register_script(SYNC)
        self._leave = self._redis.register_script(LEAVE)
        self._prefix = key_prefix
        self._lease_s = member_ttl_s
        self._fallback_members = fallback_members
        self._clock = clock
        self._metrics = ClusterMetrics(registry)
        self.member = f"{os.uname().nodename}:{os.getpid()}:{os.urandom(4).hex()}"
        self._shares: dict[str, PoolShare] = {}
        self._periodic = Periodic(
            name="cluster-capacity", interval_s=heartbeat_s, step=self._sync_logged
        )
        self._down = False

    def share(self, pool: str) -> PoolShare | None:
        return self._shares.get(pool)

    async def start(self) -> None:
        """Sync once (so the first requests find a share), then every heartbeat."""
        await self.sync()
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()
        keys = [k for name in self._shares for k in self._keys(name)]
        if keys:
            with contextlib.suppress(RedisError, OSError):
                await self._leave(keys=keys, args=[self.member])
        await self._redis.aclose()

    async def sync(self) -> None:
        """One round trip: renew, report, and apply the grants to the pool queues."""
        queues = [self._scheduler.queue(pool) for pool in self._pools()]
        if not queues:
            return
        keys: list[str] = []
        args: list[int | str] = [self.member, int(self._lease_s * 1000)]
        for queue in queues:
            share = self._shares.get(queue.pool.name)
            if share is None:
                share = self._shares[queue.pool.name] = PoolShare(self._fallback_members)
            keys += self._keys(queue.pool.name)
            args += [queue.replica_capacity(), share.floor(queue.in_flight)]
        sent = self._clock()
        try:
            reply = await self._sync(keys=keys, args=args)
        except (RedisError, OSError, TimeoutError) as error:
            self._metrics.syncs.labels("error").inc()
            if not self._down:
                _log.warning(
                    "cluster capacity: Redis unreachable (%s); admitting a conservative share "
                    "until it answers again",
                    error,
                )
            self._down = True
            now = self._clock()
            for queue in queues:
                share = self._shares[queue.pool.name]
                share.failed(capacity=queue.replica_capacity(), now=now)
                self._apply(queue.pool.name, share, queue)
            return
        self._metrics.syncs.labels("ok").inc()
        if self._down:
            _log.warning("cluster capacity: Redis answers again; shares are shared again")
        self._down = False
        for i, queue in enumerate(queues):
            share = self._shares[queue.pool.name]
            grant, target, members = (int(v) for v in reply[3 * i : 3 * i + 3])
            share.synced(
                grant=grant, target=target, members=members, lease_until=sent + self._lease_s
            )
            self._apply(queue.pool.name, share, queue)

    def _apply(self, pool: str, share: PoolShare, queue: PoolQueue) -> None:
        queue.set_share(share.limit)
        m = self._metrics
        m.share.labels(pool).set(share.limit)
        m.members.labels(pool).set(share.members)
        for mode in MODES:
            m.mode.labels(pool, mode).set(1.0 if mode == share.mode else 0.0)

    def _keys(self, pool: str) -> tuple[str, str]:
        base = f"{self._prefix}:cluster:{pool}"
        return f"{base}:members", f"{base}:grants"

    async def _sync_logged(self) -> None:
        try:
            await self.sync()
        except Exception:  # a bug must not stop the heartbeat: the lease would lapse
            _log.exception("cluster capacity sync failed")
