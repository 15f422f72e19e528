"""This gateway's concurrency leases in Redis, renewed together in the background.

A lease is a member of a tenant's (or key's) lease set scored by its expiry. Every ``every_s``
one pipelined round trip renews every lease the gateway holds (one RENEW per tenant, so each
script stays in one hash slot); the admit script drops expired members before it counts. A
gateway killed with -9 stops renewing, and its slots come back one lease after its last
renewal. The request path only adds and removes dict entries.

A gateway that cannot reach Redis for longer than a lease loses its leases while its requests
keep running: the tenant may then briefly hold more slots than its limit. A lease is therefore
several renewal periods long, so a missed renewal or two costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tidegate.background import BackgroundTask
from tidegate.pipeline.limits import lua

__all__ = ["LeaseRenewer"]

log = logging.getLogger(__name__)


class LeaseRenewer:
    def __init__(
        self,
        *,
        redis: aioredis.Redis,
        lease_s: float,
        every_s: float,
        now: Callable[[], str],
    ) -> None:
        """``now``: the time the scripts get ('' for Redis's TIME; tests pass their clock)."""
        self._redis = redis
        self._script = redis.register_script(lua.RENEW)
        self._lease = str(lease_s)
        self._every_s = every_s
        self._now = now
        self._held: dict[str, dict[str, tuple[str, ...]]] = {}
        """Tenant id → admission id → the lease sets it is a member of."""
        self._task = BackgroundTask("lease-renewer", self._run)
        self._failing = False
        self.renewal_failures = 0
        """Renewal rounds Redis did not answer (read by the metrics)."""

    @property
    def held(self) -> int:
        return sum(len(leases) for leases in self._held.values())

    def hold(self, tenant_id: str, member: str, keys: tuple[str, ...]) -> None:
        self._held.setdefault(tenant_id, {})[member] = keys
        self._task.start()  # on the first lease; a running renewer is left as it is

    def release(self, tenant_id: str, member: str) -> None:
        leases = self._held.get(tenant_id)
        if leases is not None:
            leases.pop(member, None)
            if not leases:
                del self._held[tenant_id]

    async def renew(self) -> int:
        """Renew every lease held now, in one round trip; returns how many. Raises RedisError
        or OSError when Redis does not answer."""
        if not self._held:
            return 0
        pipe = self._redis.pipeline(transaction=False)
        count = 0
        now = self._now()
        for leases in self._held.values():
            keys: list[str] = []
            args: list[str] = [self._lease, now]
            for member, sets in leases.items():
                for key in sets:
                    if key not in keys:
                        keys.append(key)
                    args += (str(keys.index(key) + 1), member)
                count += 1
            await self._script(keys=keys, args=args, client=pipe)
        await pipe.execute()
        return count

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            try:
                await self.renew()
            except (RedisError, OSError) as error:
                self.renewal_failures += 1
                if not self._failing:  # once per outage, not once per period
                    log.warning(
                        "cannot renew %d concurrency leases in Redis (%s); they expire %s s "
                        "after the last renewal",
                        self.held,
                        error,
                        self._lease,
                    )
                self._failing = True
            else:
                if self._failing:
                    log.warning("concurrency leases renewed again")
                self._failing = False

    async def aclose(self) -> None:
        await self._task.stop()
