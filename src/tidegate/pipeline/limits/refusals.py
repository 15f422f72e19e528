"""The 429 a refused request gets: which limit, its value, and what to do about it."""

from __future__ import annotations

import math

from tidegate.errors import LimitCode, LimitExceededError
from tidegate.pipeline.limits.headers import Headers, format_duration
from tidegate.pipeline.limits.model import (
    DAY_COST,
    DAY_TOKENS,
    KEY_CONCURRENCY,
    KEY_RPM,
    KEY_TPM,
    MONTH_COST,
    MONTH_TOKENS,
    TENANT_CONCURRENCY,
    TENANT_RPM,
    TENANT_TPM,
    Demand,
)
from tidegate.pipeline.pricing import NANOS_PER_USD

_RATE = {
    TENANT_RPM: ("tenant", "limits.requests_per_minute", "requests per minute"),
    TENANT_TPM: ("tenant", "limits.tokens_per_minute", "tokens per minute"),
    TENANT_CONCURRENCY: ("tenant", "limits.concurrent_requests", "concurrent requests"),
    KEY_RPM: ("API key", "limits.requests_per_minute", "requests per minute"),
    KEY_TPM: ("API key", "limits.tokens_per_minute", "tokens per minute"),
    KEY_CONCURRENCY: ("API key", "limits.concurrent_requests", "concurrent requests"),
}
_BUDGET = {
    DAY_TOKENS: ("budgets.daily_tokens", "daily token budget", "00:00 UTC"),
    DAY_COST: ("budgets.daily_cost_usd", "daily cost budget", "00:00 UTC"),
    MONTH_TOKENS: ("budgets.monthly_tokens", "monthly token budget", "the 1st of next month"),
    MONTH_COST: ("budgets.monthly_cost_usd", "monthly cost budget", "the 1st of next month"),
}


def refusal(demand: Demand, failed: int, wait_s: float, headers: Headers) -> LimitExceededError:
    code: LimitCode
    retry_after: float | None = wait_s
    if failed in _BUDGET:
        code = "budget_exceeded"
        field, what, reset = _BUDGET[failed]
        value = demand.budget[failed - DAY_TOKENS]
        if failed in (DAY_COST, MONTH_COST):
            shown = "$" + f"{value / NANOS_PER_USD:.6f}".rstrip("0").rstrip(".")
        else:
            shown = str(value)
        message = (
            f"The tenant's {what} ({field} = {shown}) has no room left for this request "
            f"({_prompt(demand)} and at least {_least(demand)}). It resets at {reset}, in "
            f"{format_duration(wait_s)}; until then an operator can raise {field}."
        )
    else:
        owner, field, what = _RATE[failed]
        value = demand.limits[failed]
        if failed in (TENANT_CONCURRENCY, KEY_CONCURRENCY):
            code = "concurrency_limit"
            message = (
                f"The {owner}'s limit of {value} {what} ({field}) is reached. Retry when one of "
                f"its requests has finished, or ask an operator to raise {field}."
            )
        elif math.isinf(wait_s):
            code, retry_after = "rate_limit_exceeded", None
            completion = f"max_tokens {demand.max_tokens}" if demand.max_tokens else _least(demand)
            if demand.max_tokens and demand.sequences > 1:
                completion += f" for each of {demand.sequences} sequences"
            message = (
                f"This request needs {_prompt(demand)} plus {completion}, more than the "
                f"{owner}'s limit of {value} {what} ({field}) allows at once. Lower max_tokens "
                f"or shorten the prompt, or ask an operator to raise {field}."
            )
        else:
            code = "rate_limit_exceeded"
            message = (
                f"Rate limit reached: the {owner}'s limit is {value} {what} ({field}). Retry in "
                f"{format_duration(wait_s)}, send fewer or smaller requests (lower max_tokens), "
                f"or ask an operator to raise {field}."
            )
    return LimitExceededError(message, code=code, retry_after_s=retry_after, headers=headers)


def _prompt(demand: Demand) -> str:
    if demand.prompt_is_bound:
        return (
            f"a prompt counted as at most {demand.prompt_tokens} tokens, one per byte of its "
            "text, as the gateway has no tokenizer for this model"
        )
    return f"{demand.prompt_tokens} prompt tokens"


def _least(demand: Demand) -> str:
    if demand.sequences > 1:
        return f"one completion token for each of its {demand.sequences} sequences"
    return "one completion token"
