"""What the limiter asks a limit store, and what the store answers.

A store checks every limit of one request at once and either reserves all of them or none
(``Demand`` in, ``Verdict`` out), then settles the reservation to the real usage. Check indices
name each limit in the order ``layout.Layout`` derives from the kinds table, which the
in-process store and the Redis scripts share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tidegate.pipeline.limits.periods import Period

CONCURRENCY_RETRY_S = 1.0
"""Retry-After for a concurrency refusal: a slot frees when some request ends, unknown when."""

UNBOUNDED = 2**40
"""Completion tokens per sequence of a request that nothing bounds (no max_tokens, no context
length): every budget and token bucket then caps it at what it has left. Exact in a Lua double."""


class LimitStoreUnavailable(Exception):
    """The store did not answer in time or at all (the tenant's failure mode decides)."""


@dataclass(slots=True)
class Demand:
    tenant_id: str
    key_id: str
    limits: tuple[int, ...]
    """The tenant's rate kinds, then the key's (``Layout.rate_values``); 0: no limit."""
    budget: tuple[int, ...]
    """The budgets in check order (``Layout.budget_values``; cost in nano-USD); 0: none."""
    prompt_tokens: int
    """The prompt's tokens, or an upper bound on them (never fewer than the engine counts)."""
    max_tokens: int
    """Completion tokens per sequence; 0: unbounded, so every budget and token bucket caps it
    at what it has left (and the request path writes that cap into the forwarded request)."""
    sequences: int
    """Sequences generated (prompts × n): each completion token reserved counts this often."""
    prompt_cost: int
    """Nano-USD of the prompt at the full input price (cached tokens are known only later)."""
    output_cost: float
    """Nano-USD per completion token."""
    periods: tuple[Period, ...]
    """The current budget periods, as ``Layout.periods`` names them (day, month)."""
    prompt_is_bound: bool = False
    """``prompt_tokens`` is an upper bound from the body's size (no tokenizer), not a count."""


@dataclass(slots=True)
class Verdict:
    admitted: bool
    completion: int
    """Completion tokens reserved over all sequences (a multiple of ``sequences``): max_tokens,
    or fewer where a budget or (for an unbounded request) a token bucket has less left; 0 for
    an unbounded request that no budget or token bucket caps."""
    cost: int
    """Nano-USD reserved."""
    levels: Sequence[float]
    """What is left in each bucket: the tenant's, then the key's (``Bucket.level``)."""
    failed: int = -1
    """Index of the check that refused the request; -1 when admitted."""
    wait_s: float = 0.0
    """When the refusing check could pass; inf where it never can (the request is too large)."""
    handle: object = None
    """The store's own state for settle."""


class LimitStore(Protocol):
    async def admit(self, demand: Demand) -> Verdict: ...

    async def settle(self, demand: Demand, verdict: Verdict, *, tokens: int, cost: int) -> None:
        """Charge the real ``tokens`` and ``cost``: refund the rest of the reservation (or
        charge the excess), and release the concurrency slots."""

    async def seed_spend(self, *, tenant_id: str, period: Period, tokens: int, cost: int) -> None:
        """Set a tenant's spend in a period, unless the store already counts it."""

    async def aclose(self) -> None: ...


def budget_allowance(
    *, limit: int, spent: int, base: int, per_token: float, max_tokens: int
) -> int:
    """Most completion tokens per sequence (at most ``max_tokens``) with
    ``base + ceil(per_token * n)`` within ``limit - spent``, where ``per_token`` is what one
    token of every sequence costs; -1 when not even one fits (the budget refuses the request)."""
    remaining = limit - spent
    if remaining <= 0 or base > remaining:
        return -1
    if per_token <= 0:
        return max_tokens
    allowed = min(max_tokens, math.floor((remaining - base) / per_token))
    while allowed > 0 and base + math.ceil(per_token * allowed) > remaining:
        allowed -= 1  # float rounding in the division
    return allowed if allowed >= 1 else -1


def bucket_allowance(*, level: float, base: int, per_token: int, max_tokens: int) -> int:
    """For an unbounded request: most completion tokens per sequence (at most ``max_tokens``)
    with ``base + per_token * n`` within a token bucket's ``level``; -1 when not one fits."""
    if level < base + per_token:
        return -1
    allowed = min(max_tokens, math.floor((level - base) / per_token))
    while allowed > 0 and base + per_token * allowed > level:
        allowed -= 1  # float rounding in the division
    return allowed if allowed >= 1 else -1
