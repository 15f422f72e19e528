"""The 429 a refused request gets: which limit, its value, and what to do about it.

The words, the template and the code come from the refused kind (``LimitKind.refusal``,
``too_large``, ``code``); this fills them in.
"""

from __future__ import annotations

import math

from tidegate.errors import LimitExceededError
from tidegate.pipeline.limits.headers import Headers, format_duration
from tidegate.pipeline.limits.layout import Check
from tidegate.pipeline.limits.model import Demand
from tidegate.pipeline.pricing import NANOS_PER_USD


def refusal(demand: Demand, check: Check, wait_s: float, headers: Headers) -> LimitExceededError:
    kind = check.kind
    retry_after: float | None = wait_s
    template = kind.refusal
    if kind.section == "budgets":
        value = demand.budget[check.value]
        if kind.usd:
            shown = "$" + f"{value / NANOS_PER_USD:.6f}".rstrip("0").rstrip(".")
        else:
            shown = str(value)
    else:
        value = demand.limits[check.value]
        shown = str(value)
        if kind.too_large and math.isinf(wait_s):
            template, retry_after = kind.too_large, None
    completion = f"max_tokens {demand.max_tokens}" if demand.max_tokens else _least(demand)
    if demand.max_tokens and demand.sequences > 1:
        completion += f" for each of {demand.sequences} sequences"
    message = template.format(
        owner=check.owner,
        value=value,
        what=kind.what,
        field=f"{kind.section}.{kind.field}",
        shown=shown,
        wait="" if math.isinf(wait_s) else format_duration(wait_s),
        resets=kind.resets,
        prompt=_prompt(demand),
        least=_least(demand),
        completion=completion,
    )
    return LimitExceededError(message, code=kind.code, retry_after_s=retry_after, headers=headers)


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
