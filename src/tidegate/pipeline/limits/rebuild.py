"""What a lost Redis counter should hold, read back from the usage records.

A budget or tokens-per-minute counter missing in Redis (a restart without persistence, an
eviction, a failover to an empty replica) is never read as zero: the admit script says which
counters are missing, and the Redis store rebuilds them from here before admitting again.

- A budget: the tenant's spend in the period, summed over its usage records.
- A tokens-per-minute bucket: its capacity less the tokens of the requests that finished in the
  last minute (a token bucket never holds a debt older than a minute, so this is never more than
  the bucket really had), with ``TPM_SLACK_S`` more for clocks that differ between gateways.

What this cannot see (the bound the README states): usage a gateway had metered but not yet
written to the store when the rebuild ran (its meter's buffer, ``metering.flush_interval_s``).
Requests still in flight when the counter was lost are not lost: their settle finds a rebuilt
counter and charges their real usage to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tidegate.metering.queries import Period as SpendPeriod
from tidegate.metering.queries import RecentTokens, Spend
from tidegate.pipeline.limits.model import KEY_TPM, TENANT_TPM, Demand
from tidegate.pipeline.pricing import usd_to_nanos

__all__ = [
    "DAY",
    "KEY_BUCKET",
    "MONTH",
    "REBUILT_COUNTERS",
    "TENANT_BUCKET",
    "TPM_SLACK_S",
    "Rebuilt",
    "UsageSource",
]

# The admit script's "needs seed" mask.
TENANT_BUCKET, KEY_BUCKET, DAY, MONTH = 1, 2, 4, 8
REBUILT_COUNTERS = {TENANT_BUCKET: "tenant_tpm", KEY_BUCKET: "key_tpm", DAY: "day", MONTH: "month"}

TPM_SLACK_S = 10.0
"""Added to the minute a token bucket remembers, for clocks that differ between gateways and
the database: counting more is the safe side."""


class UsageSource(Protocol):
    """The store's usage records (``UsageQueries``)."""

    async def spend_so_far(self, tenant_id: str, period: SpendPeriod) -> Spend: ...

    async def recent_tokens(
        self, tenant_id: str, *, window_s: float, slack_s: float
    ) -> RecentTokens: ...


@dataclass(frozen=True, slots=True)
class Rebuilt:
    tenant_tpm_used: int = 0
    key_tpm_used: int = 0
    day: tuple[int, int] = (0, 0)
    """Tokens and nano-USD spent in the day so far."""
    month: tuple[int, int] = (0, 0)


async def measure(usage: UsageSource | None, demand: Demand, mask: int) -> Rebuilt:
    """What the counters in ``mask`` should hold for ``demand``'s tenant and key. ``usage``
    None (tests and tools without a store): every lost counter starts from zero."""
    if usage is None:
        return Rebuilt()
    tenant_used = key_used = 0
    if mask & (TENANT_BUCKET | KEY_BUCKET) and (
        demand.limits[TENANT_TPM] or demand.limits[KEY_TPM]
    ):
        recent = await usage.recent_tokens(demand.tenant_id, window_s=60.0, slack_s=TPM_SLACK_S)
        tenant_used, key_used = recent.tenant, recent.by_key.get(demand.key_id, 0)
    day = month = (0, 0)
    if mask & DAY:
        spend = await usage.spend_so_far(demand.tenant_id, "day")
        day = (spend.tokens, usd_to_nanos(spend.cost_usd))
    if mask & MONTH:
        spend = await usage.spend_so_far(demand.tenant_id, "month")
        month = (spend.tokens, usd_to_nanos(spend.cost_usd))
    return Rebuilt(tenant_used, key_used, day, month)
