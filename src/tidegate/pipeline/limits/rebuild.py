"""What a lost Redis counter should hold, read back from the usage records.

A budget or tokens-per-minute counter missing in Redis (a restart without persistence, an
eviction, a failover to an empty replica) is never read as zero: the admit script says which
counters are missing, and the Redis store rebuilds them from here before admitting again.

- A budget: the tenant's spend in the period, summed over its usage records.
- A tokens bucket (tokens per minute): its capacity less the tokens of the requests that
  finished in its last window (a token bucket never holds a debt older than its window, so this
  is never more than the bucket really had), with ``TPM_SLACK_S`` more for clocks that differ
  between gateways.

Which counters can be lost, and their bits in the mask, come from ``Layout.rebuilt``.

What this cannot see (the bound the README states): usage a gateway had metered but not yet
written to the store when the rebuild ran (its meter's buffer, ``metering.flush_interval_s``).
Requests still in flight when the counter was lost are not lost: their settle finds a rebuilt
counter and charges their real usage to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, cast

from tidegate.metering.queries import Period as SpendPeriod
from tidegate.metering.queries import RecentTokens, Spend
from tidegate.pipeline.limits.layout import LAYOUT, Layout
from tidegate.pipeline.limits.model import Demand
from tidegate.pipeline.pricing import usd_to_nanos

__all__ = ["REBUILT_COUNTERS", "TPM_SLACK_S", "Rebuilt", "UsageSource", "measure"]

REBUILT_COUNTERS = {counter.bit: counter.label for counter in LAYOUT.rebuilt}
"""The admit script's "needs seed" mask: bit → the counter's metric label."""

TPM_SLACK_S = 10.0
"""Added to the window a token bucket remembers, for clocks that differ between gateways and
the database: counting more is the safe side."""


class UsageSource(Protocol):
    """The store's usage records (``UsageQueries``)."""

    async def spend_so_far(self, tenant_id: str, period: SpendPeriod) -> Spend: ...

    async def recent_tokens(
        self, tenant_id: str, *, window_s: float, slack_s: float
    ) -> RecentTokens: ...


@dataclass(frozen=True, slots=True)
class Rebuilt:
    """What each lost counter of ``Layout.rebuilt`` should hold (0 where not asked)."""

    buckets: tuple[int, ...]
    """Per rebuilt bucket (in ``Layout.rebuilt`` order): tokens used in its last window."""
    periods: tuple[tuple[int, int], ...]
    """Per budget period: tokens and nano-USD spent in it so far."""

    @property
    def nonzero(self) -> bool:
        return any(self.buckets) or any(tokens for tokens, _ in self.periods)


async def measure(
    usage: UsageSource | None, demand: Demand, mask: int, layout: Layout = LAYOUT
) -> Rebuilt:
    """What the counters in ``mask`` should hold for ``demand``'s tenant and key. ``usage``
    None (tests and tools without a store): every lost counter starts from zero."""
    buckets = [0] * sum(1 for counter in layout.rebuilt if counter.check >= 0)
    periods = [(0, 0)] * len(layout.periods)
    if usage is None:
        return Rebuilt(tuple(buckets), tuple(periods))
    recent: dict[float, RecentTokens] = {}  # one query per window
    for n, counter in enumerate(layout.rebuilt):
        if not mask & counter.bit:
            continue
        if counter.check >= 0:
            if not demand.limits[counter.check]:
                continue
            window = recent.get(counter.window_s)
            if window is None:
                window = recent[counter.window_s] = await usage.recent_tokens(
                    demand.tenant_id, window_s=counter.window_s, slack_s=TPM_SLACK_S
                )
            owner = counter.check // layout.rate_count
            buckets[n] = window.tenant if owner == 0 else window.by_key.get(demand.key_id, 0)
        else:
            period = cast(SpendPeriod, layout.periods[counter.period])
            spend = await usage.spend_so_far(demand.tenant_id, period)
            periods[counter.period] = (spend.tokens, usd_to_nanos(spend.cost_usd))
    return Rebuilt(tuple(buckets), tuple(periods))
