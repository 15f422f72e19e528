"""The limiter the request path calls: admit a request, then settle what it really used.

``admit`` reserves everything a request may use at once (a request from each rpm bucket,
prompt + max_tokens × sequences from each tpm bucket and budget, its cost, a concurrency slot)
or nothing, and raises ``LimitExceededError`` when any limit refuses. The prompt is the exact
count, or an upper bound where the gateway has no tokenizer, so a reservation is never less
than the request can use. When a budget has room for the prompt and some but not all of
max_tokens, or the request has no max_tokens at all, the completion is capped at what every
budget (and, for a request without max_tokens, every token bucket) has left:
``Admission.completion_allowance`` is that cap per sequence, which the request path writes
into the forwarded request, and ``Admission.completion_limit`` the total the relay cuts a
stream at. A request without max_tokens that comes with a ``default_max_tokens`` (its model's
context length is unknown) reserves that much at most where a budget or token bucket counts its
tokens, so one such request never holds a tenant's whole budget, and always has it written.
``settle`` charges the real usage and hands back the rest; it must run exactly once
per admission, also when the request fails or the client goes away.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from tidegate.errors import LimiterUnavailableError
from tidegate.pipeline.limits.headers import HeaderBuilder, Headers
from tidegate.pipeline.limits.layout import LAYOUT, Layout
from tidegate.pipeline.limits.memory import MemoryLimitStore
from tidegate.pipeline.limits.metrics import LimiterMetrics, ThrottledWarning
from tidegate.pipeline.limits.model import Demand, LimitStore, LimitStoreUnavailable, Verdict
from tidegate.pipeline.limits.periods import PeriodClock
from tidegate.pipeline.limits.refusals import refusal
from tidegate.pipeline.pricing import PriceTable, usd_to_nanos
from tidegate.tenancy.policy import Budgets, LimiterFailureMode, RateLimits

_CACHE_MAX = 4096
_NO_HEADERS: Headers = []


class Admission:
    """One admitted request's reservation."""

    __slots__ = (
        "headers",
        "completion_allowance",
        "completion_limit",
        "_limiter",
        "_demand",
        "_verdict",
        "_model",
        "_mode",
    )

    def __init__(
        self,
        *,
        limiter: Limiter,
        headers: Headers,
        completion_allowance: int | None,
        completion_limit: int | None = None,
        demand: Demand | None,
        verdict: Verdict | None,
        model: str,
        mode: LimiterFailureMode,
    ) -> None:
        self.headers = headers
        """x-ratelimit-* headers for the response (only for limits that exist)."""
        self.completion_allowance = completion_allowance
        """Completion tokens per sequence the request may generate, to be written into the
        forwarded request, when that is fewer than it asked for or it asked for no limit;
        None: its own max_tokens fits (or nothing counts its tokens)."""
        self.completion_limit = completion_limit
        """Completion tokens reserved over all sequences, where a budget or token bucket counts
        them: the most the response may carry (the relay cuts a stream there); None: none."""
        self._limiter = limiter
        self._demand = demand
        self._verdict = verdict
        self._model = model
        self._mode: LimiterFailureMode = mode

    async def settle(
        self, *, prompt_tokens: int, cached_tokens: int = 0, completion_tokens: int
    ) -> None:
        """Charge the real usage and release the reservation. A second call does nothing."""
        demand, verdict = self._demand, self._verdict
        if demand is None or verdict is None:
            return
        self._demand = self._verdict = None  # before the await: a concurrent second call no-ops
        await self._limiter._settle(
            demand,
            verdict,
            self._model,
            self._mode,
            prompt_tokens,
            cached_tokens,
            completion_tokens,
        )


class Limiter:
    def __init__(
        self,
        *,
        store: LimitStore,
        prices: PriceTable,
        metrics: LimiterMetrics | None = None,
        clock: Callable[[], float] = time.time,
        logger: logging.Logger | None = None,
        layout: Layout = LAYOUT,
    ) -> None:
        """``clock``: wall time, which picks the budget period (UTC day and month).
        ``layout``: the kinds table's, as the store's."""
        self._store = store
        # The in-process store answers without I/O: called directly, with no coroutine to
        # create and await twice per request. Only that exact class: a subclass may override
        # the async methods, and other stores go through them.
        self._local = store if type(store) is MemoryLimitStore else None
        self._prices = prices
        self._metrics = metrics
        self._clock = clock
        self._layout = layout
        self._periods = PeriodClock(layout.periods)
        self._headers = HeaderBuilder(layout)
        self._token_checks = tuple(b.check for b in layout.buckets if b.tokens)
        self._warning = ThrottledWarning(logger=logger or logging.getLogger("tidegate.limits"))
        self._rates: dict[int, tuple[RateLimits, tuple[int, ...]]] = {}
        self._budgets: dict[int, tuple[Budgets, tuple[int, ...]]] = {}
        self._unlimited = Admission(
            limiter=self,
            headers=_NO_HEADERS,
            completion_allowance=None,
            demand=None,
            verdict=None,
            model="",
            mode="open",
        )

    async def admit(
        self,
        *,
        tenant_id: str,
        key_id: str,
        tenant_limits: RateLimits,
        key_limits: RateLimits,
        budgets: Budgets,
        model: str,
        prompt_tokens: int,
        max_tokens: int | None,
        failure_mode: LimiterFailureMode,
        sequences: int = 1,
        prompt_is_bound: bool = False,
        default_max_tokens: int | None = None,
    ) -> Admission:
        """``prompt_tokens``: the prompt's count, or an upper bound (``prompt_is_bound``).
        ``max_tokens``: completion tokens per sequence; None or 0: unbounded, capped by what
        the budgets and token buckets have left, and by ``default_max_tokens`` where one of
        them counts tokens. ``sequences``: prompts × n."""
        limits = self._rate_tuple(tenant_limits) + self._rate_tuple(key_limits)
        budget = self._budget_tuple(budgets)
        if not any(limits) and not any(budget):
            return self._unlimited
        # Only where tokens are counted: elsewhere an unbounded request reserves no completion
        # and is forwarded as it came.
        implicit = (
            default_max_tokens
            if not max_tokens
            and default_max_tokens
            and (any(limits[check] for check in self._token_checks) or any(budget))
            else None
        )
        if implicit:
            max_tokens = implicit
        rates = self._prices.rates(model)
        periods = self._periods.periods(self._clock())
        demand = Demand(
            tenant_id,
            key_id,
            limits,
            budget,
            prompt_tokens,
            max(0, max_tokens or 0),
            max(1, sequences),
            # Rounded up like PriceTable.cost_nanos, so the prompt never costs more at settle.
            math.ceil(prompt_tokens * rates.input),
            rates.output,
            periods,
            prompt_is_bound,
        )
        try:
            local = self._local
            verdict = (
                local.admit_now(demand) if local is not None else await self._store.admit(demand)
            )
            if implicit and not verdict.admitted and verdict.failed in self._token_checks:
                # A token bucket has less than the default left (or holds less in all): take
                # what it has, as an unbounded request does; the refusal reserved nothing.
                demand.max_tokens = 0
                verdict = (
                    local.admit_now(demand)
                    if local is not None
                    else await self._store.admit(demand)
                )
        except LimitStoreUnavailable as error:
            if self._metrics is not None:
                self._metrics.store_unavailable("admit", failure_mode)
            self._warning.warn(
                "limit store unavailable (%s); tenant requests fail %s", error, failure_mode
            )
            if failure_mode == "open":
                return self._unlimited
            raise LimiterUnavailableError(
                "The gateway cannot reach its rate-limit store (Redis) and this tenant is set to "
                "refuse requests then (on_limiter_unavailable: closed). Retry shortly; an "
                "operator can check Redis, or set on_limiter_unavailable: open for the tenant.",
                code="limiter_unavailable",
                retry_after_s=1.0,
            ) from error
        headers = self._headers.build(limits, verdict.levels)
        if not verdict.admitted:
            refused = refusal(demand, self._layout.checks[verdict.failed], verdict.wait_s, headers)
            if self._metrics is not None:
                self._metrics.rejected(refused.limit_code)
            raise refused
        per_sequence = verdict.completion // demand.sequences
        if implicit:
            # Always written: the engine's own default is the whole context. A bucket that
            # refilled between the two tries may have given more than the default.
            allowance: int | None = min(per_sequence, implicit) if per_sequence else None
        else:
            allowance = (
                per_sequence
                if per_sequence and (not demand.max_tokens or per_sequence < demand.max_tokens)
                else None
            )
        return Admission(
            limiter=self,
            headers=headers,
            completion_allowance=allowance,
            completion_limit=verdict.completion or None,
            demand=demand,
            verdict=verdict,
            model=model,
            mode=failure_mode,
        )

    async def seed_spend(self, *, tenant_id: str, **spent: float) -> None:
        """Start a tenant's current budget periods from its usage records (at gateway start,
        or when its budgets are set): ``{period}_tokens`` and ``{period}_cost_usd`` for each
        period of ``Layout.periods`` (``day_tokens=``, ``month_cost_usd=``; left out: 0). A
        store that already counts the period keeps its own count, which includes requests
        still in flight."""
        periods = self._periods.periods(self._clock())
        for name, period in zip(self._layout.periods, periods, strict=True):
            await self._store.seed_spend(
                tenant_id=tenant_id,
                period=period,
                tokens=int(spent.get(f"{name}_tokens", 0)),
                cost=usd_to_nanos(spent.get(f"{name}_cost_usd", 0.0)),
            )

    async def aclose(self) -> None:
        await self._store.aclose()

    async def _settle(
        self,
        demand: Demand,
        verdict: Verdict,
        model: str,
        mode: LimiterFailureMode,
        prompt_tokens: int,
        cached_tokens: int,
        completion_tokens: int,
    ) -> None:
        cost = self._prices.cost_nanos(
            model,
            prompt_tokens=prompt_tokens,
            cached_tokens=cached_tokens,
            completion_tokens=completion_tokens,
        )
        tokens = prompt_tokens + completion_tokens
        try:
            if self._local is not None:
                self._local.settle_now(demand, verdict, tokens=tokens, cost=cost)
            else:
                await self._store.settle(demand, verdict, tokens=tokens, cost=cost)
        except LimitStoreUnavailable as error:
            # The reservation stays charged: budgets keep the unused rest until the period
            # ends, a concurrency slot until its lease ends. Never fails the request.
            if self._metrics is not None:
                self._metrics.store_unavailable("settle", mode)
            self._warning.warn("limit store unavailable at settle (%s)", error)

    def _rate_tuple(self, limits: RateLimits) -> tuple[int, ...]:
        cached = self._rates.get(id(limits))
        if cached is not None and cached[0] is limits:
            return cached[1]
        values = self._layout.rate_values(limits)
        if len(self._rates) >= _CACHE_MAX:
            self._rates.clear()
        self._rates[id(limits)] = (limits, values)
        return values

    def _budget_tuple(self, budgets: Budgets) -> tuple[int, ...]:
        cached = self._budgets.get(id(budgets))
        if cached is not None and cached[0] is budgets:
            return cached[1]
        values = self._layout.budget_values(budgets)
        if len(self._budgets) >= _CACHE_MAX:
            self._budgets.clear()
        self._budgets[id(budgets)] = (budgets, values)
        return values
