"""What a request costs, from the per-model price table (``Config.pricing``).

Budgets count cost in integer nano-USD so that reservations and refunds cancel exactly in every
store (Lua numbers are doubles: integers stay exact up to 2**53 nano-USD, about $9 million).
Amounts are rounded up, so a settled request never costs more than its reservation did.
A model without a price costs nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from tidegate.config import ModelPrice

NANOS_PER_USD = 1_000_000_000


@dataclass(frozen=True, slots=True)
class TokenRates:
    """One model's price in nano-USD per token (USD per million tokens × 1000)."""

    input: float
    cached_input: float
    output: float


class PriceTable:
    def __init__(self, *, prices: Mapping[str, ModelPrice]) -> None:
        self._rates = {model: _rates(price) for model, price in prices.items()}
        self._free = TokenRates(0.0, 0.0, 0.0)

    def rates(self, model: str) -> TokenRates:
        return self._rates.get(model, self._free)

    def cost_nanos(
        self, model: str, *, prompt_tokens: int, cached_tokens: int = 0, completion_tokens: int
    ) -> int:
        rates = self._rates.get(model)
        if rates is None:
            return 0
        cached = min(max(cached_tokens, 0), prompt_tokens)
        exact = (
            (prompt_tokens - cached) * rates.input
            + cached * rates.cached_input
            + completion_tokens * rates.output
        )
        return math.ceil(exact)

    def cost_usd(
        self, model: str, *, prompt_tokens: int, cached_tokens: int = 0, completion_tokens: int
    ) -> float:
        nanos = self.cost_nanos(
            model,
            prompt_tokens=prompt_tokens,
            cached_tokens=cached_tokens,
            completion_tokens=completion_tokens,
        )
        return nanos / NANOS_PER_USD


def usd_to_nanos(usd: float) -> int:
    return round(usd * NANOS_PER_USD)


def _rates(price: ModelPrice) -> TokenRates:
    cached_per_million = price.cached_input_per_million
    if cached_per_million is None:
        cached_per_million = price.input_per_million
    per_token = NANOS_PER_USD / 1_000_000
    return TokenRates(
        input=price.input_per_million * per_token,
        cached_input=cached_per_million * per_token,
        output=price.output_per_million * per_token,
    )
