"""Seeding budgets with what a tenant already spent in the current day and month.

A store counts a tenant's spend only while the tenant has budgets: the in-process store starts
empty at every gateway start, and neither store counted a tenant that had no budgets until an
operator gave it some. Both cases start the tenant's current day and month from its usage
records. ``Limiter.seed_spend`` keeps a count the store already has (it includes requests still
in flight), so seeding a tenant twice changes nothing.
"""

from __future__ import annotations

import logging
from typing import Protocol, cast

from tidegate.metering.queries import Period as SpendPeriod
from tidegate.metering.queries import Spend
from tidegate.pipeline.limits.layout import LAYOUT
from tidegate.pipeline.limits.limiter import Limiter
from tidegate.pipeline.limits.model import LimitStoreUnavailable
from tidegate.tenancy.policy import Budgets

__all__ = ["SpendSource", "has_budgets", "seed_budget_spend"]

log = logging.getLogger(__name__)


class SpendSource(Protocol):
    """What a tenant used so far in the current UTC day or month (``UsageQueries``)."""

    async def spend_so_far(self, tenant_id: str, period: SpendPeriod) -> Spend: ...


def has_budgets(budgets: Budgets) -> bool:
    return any(getattr(budgets, kind.field) is not None for kind in LAYOUT.budgets)


async def seed_budget_spend(
    limiter: Limiter, usage: SpendSource, *, tenant_id: str, budgets: Budgets
) -> bool:
    """Seed ``tenant_id``'s budget periods (day, month) when it has budgets; whether it did."""
    if not has_budgets(budgets):
        return False
    spent: dict[str, float] = {}
    for period in LAYOUT.periods:
        spend = await usage.spend_so_far(tenant_id, cast(SpendPeriod, period))
        spent[f"{period}_tokens"] = spend.tokens
        spent[f"{period}_cost_usd"] = spend.cost_usd
    try:
        await limiter.seed_spend(tenant_id=tenant_id, **spent)
    except LimitStoreUnavailable as error:
        # The change itself is stored; only the head start is missing (Redis down).
        log.warning("could not seed the budgets of tenant %s: %s", tenant_id, error)
        return False
    return True
