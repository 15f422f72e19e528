"""The cost of a request on each pool, and the cheapest-first order of a chain (select: cheapest).

A managed API is paid per token, at its `pricing` entry. Self-hosted capacity is paid per hour
whether busy or not, so a completion token costs the accelerator's hourly price over the
output tokens per hour the pool sustains: ``accelerator_per_hour / 3600 / output_throughput``,
the figure ``tidegate bench`` reports as per_million_output_tokens_usd (÷ 1e6) for a
self-hosted target (its prompt tokens are inside that measured throughput, so they add nothing).

The order: pools whose predicted TTFT (the scheduler's queue wait + the pool's expected TTFT)
meets the class's target, cheapest first; then the others, quickest first. When no pool meets
the target the quickest leads (``FASTEST``): the target is missed by the least.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tidegate.config import Config
from tidegate.routing.replicas import Pool
from tidegate.routing.rules import CHEAPEST, FASTEST, ONLY_MEETING_TARGET


@dataclass(frozen=True, slots=True)
class PoolEconomics:
    input_usd_per_token: float
    output_usd_per_token: float
    expected_ttft_s: float

    def request_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.input_usd_per_token + completion_tokens * self.output_usd_per_token
        )


def pool_economics(config: Config) -> dict[str, PoolEconomics]:
    """The priced pools of ``config`` (routing.pools entries with a cost), by name."""
    table: dict[str, PoolEconomics] = {}
    for pool in config.routing.pools:
        cost = pool.cost
        if cost is None:
            continue
        if cost.pricing_model is not None:
            price = config.pricing[cost.pricing_model]  # the config checked it is there
            per_input, per_output = price.input_per_million / 1e6, price.output_per_million / 1e6
        else:
            assert cost.accelerator_per_hour is not None and cost.output_throughput is not None
            per_input, per_output = 0.0, cost.accelerator_per_hour / 3600 / cost.output_throughput
        table[pool.name] = PoolEconomics(per_input, per_output, pool.expected_ttft_s)
    return table


def cheapest_first(
    chain: tuple[Pool, ...],
    economics: Mapping[str, PoolEconomics],
    wait_s: Callable[[Pool], float],
    *,
    target_s: float | None,
    prompt_tokens: int,
    completion_tokens: int,
) -> tuple[tuple[Pool, ...], int]:
    """``chain`` reordered, and how its first pool was picked (``CHEAPEST``,
    ``ONLY_MEETING_TARGET`` or ``FASTEST``). ``wait_s``: the predicted queue wait of a pool
    (inf for a pool that cannot take the request now); ``target_s``: the class's TTFT target
    (None: every pool meets it)."""
    meeting: list[tuple[float, int, Pool]] = []
    missing: list[tuple[float, int, Pool]] = []
    for index, pool in enumerate(chain):
        found = economics.get(pool.name)
        ttft = wait_s(pool) + (found.expected_ttft_s if found is not None else 0.0)
        if target_s is None or ttft <= target_s:
            usd = found.request_usd(prompt_tokens, completion_tokens) if found else math.inf
            meeting.append((usd, index, pool))
        else:
            missing.append((ttft, index, pool))
    pick = CHEAPEST if len(meeting) > 1 else ONLY_MEETING_TARGET if meeting else FASTEST
    # (cost or TTFT, index) is unique, so sorting never compares two pools.
    meeting.sort()
    missing.sort()
    ordered = tuple(pool for _, _, pool in (*meeting, *missing))
    return (chain if ordered == chain else ordered), pick
