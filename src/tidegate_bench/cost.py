"""Cost per request, per good request and per million output tokens.

Managed targets are priced per token (input, cached input and output per million tokens, from
the usage each reply reports). Self-hosted targets are priced by the accelerator's hourly cost
times the run's measured wall time: the machine is paid for whether it is busy or not, so a
target that completes fewer requests in the same time costs more per request.
"""

from __future__ import annotations

from collections.abc import Sequence

from tidegate_bench.records import RequestRecord
from tidegate_bench.spec import Prices


def total_cost(prices: Prices, records: Sequence[RequestRecord], duration_s: float) -> float | None:
    """USD for the measured requests, or None when the target has no price."""
    if prices.managed:
        usd = 0.0
        for r in records:
            if not r.ok:
                continue
            prompt = r.prompt_tokens or 0
            cached = min(r.cached_tokens or 0, prompt)
            cached_price = prices.cached_input_per_m
            if cached_price is None:
                cached_price = prices.input_per_m or 0.0
            usd += (prompt - cached) * (prices.input_per_m or 0.0)
            usd += cached * cached_price
            usd += (r.output_tokens or 0) * (prices.output_per_m or 0.0)
        return usd / 1e6
    if prices.accelerator_per_hour is not None:
        return prices.accelerator_per_hour * duration_s / 3600.0
    return None


def cost_block(
    total: float | None, *, completed: int, good: int | None, output_tokens: int
) -> dict[str, float | None]:
    def per(n: int | None, scale: float = 1.0) -> float | None:
        return total * scale / n if total is not None and n else None

    return {
        "total_usd": total,
        "per_request_usd": per(completed),
        "per_good_request_usd": per(good),
        "per_million_output_tokens_usd": per(output_tokens, 1e6),
    }
