"""The limit kinds, declared once: everything else about limits iterates over ``KINDS``.

Each ``LimitKind`` says what it is called in a tenant's or key's settings (its policy section
and field), how the stores enforce it (its mechanism, what one request is charged, over which
period), the x-ratelimit-* headers that report it, the words and template of its 429, and its
command-line option. The policy models (``tenancy.policy``), the in-process store and the Redis
scripts (``pipeline.limits``: their check indices, KEYS and ARGV come from
``pipeline.limits.layout``), the refusals, the headers, the rebuild of lost Redis counters, the
seeding of budgets, the metrics' labels and the ``tenants``/``keys`` CLI options are all built
from this table.

To add a kind, append a ``LimitKind`` to ``KINDS`` and add its tests; nothing else changes.
A kind must use one of the existing mechanisms: a ``bucket`` (refilled continuously over its
``period``, charged one per request or the request's tokens; a tokens bucket is rebuilt from
the usage records when Redis loses it), ``slots`` (requests in flight, held by leases in
Redis) or a ``budget`` (tokens or cost per UTC ``day`` or ``month``, tenant only). A new
mechanism, or a budget period other than day and month (``pipeline.limits.periods``), is new
code in both stores. Rate kinds (section ``limits``) apply to a tenant and to each of its keys;
budget kinds (section ``budgets``) to a tenant. The order of ``KINDS`` is the order of the
settings' fields and of the CLI options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tidegate.errors import LimitCode

__all__ = ["KINDS", "MAX_COUNT", "LimitKind"]

MAX_COUNT = 2**53 - 1
"""The largest count a setting may hold: exact as a double, as Redis' Lua scripts and JSON
readers hold numbers (larger ones were stored, then failed where they were used)."""

Section = Literal["limits", "budgets"]
Mechanism = Literal["bucket", "slots", "budget"]
Charge = Literal["requests", "tokens", "cost"]
Period = Literal["minute", "hour", "day", "month", ""]

WINDOW_S: dict[str, float] = {"minute": 60.0, "hour": 3600.0}
"""How long a bucket of each period takes to refill from empty."""


@dataclass(frozen=True, slots=True)
class LimitKind:
    name: str
    """Short name: the Redis key suffix of a rate kind's counter (``{tenant}:rpm``) and, for a
    rebuilt bucket, its metric label (``tenant_tpm``)."""
    section: Section
    """The settings' section: ``limits`` (tenant and key) or ``budgets`` (tenant)."""
    field: str
    """The field in that section (``limits.requests_per_minute``)."""
    mechanism: Mechanism
    charge: Charge
    """What one request takes: one request, its prompt + completion tokens, or its cost (a
    ``slots`` kind takes one slot whatever this says)."""
    period: Period
    """A bucket's refill period, a budget's UTC period; '' for slots."""
    what: str
    """The kind in words, as the refusal says it ("requests per minute")."""
    description: str
    """The settings field's documentation."""
    option: str
    """The CLI option of ``tidegate tenants``/``keys`` (``--rpm``); 0 clears the setting."""
    help: str
    code: LimitCode
    """The 429's error code."""
    refusal: str
    """The 429's message: ``str.format`` with owner, value, what, field (``limits.x``), wait,
    prompt, least, completion, shown, resets."""
    too_large: str = ""
    """A bucket's message for a request larger than the whole bucket (no wait helps)."""
    headers: tuple[bytes, bytes, bytes] | None = None
    """A bucket's limit, remaining and reset headers; None: not reported in headers."""
    resets: str = ""
    """A budget's reset moment in words ("00:00 UTC")."""
    usd: bool = False
    """The setting is US dollars (a float; counted in nano-USD), not a count."""


_RETRY = (
    "Rate limit reached: the {owner}'s limit is {value} {what} ({field}). Retry in {wait}, "
    "send fewer or smaller requests (lower max_tokens), or ask an operator to raise {field}."
)
_TOO_LARGE = (
    "This request needs {prompt} plus {completion}, more than the {owner}'s limit of {value} "
    "{what} ({field}) allows at once. Lower max_tokens or shorten the prompt, or ask an "
    "operator to raise {field}."
)
_SLOTS = (
    "The {owner}'s limit of {value} {what} ({field}) is reached. Retry when one of its "
    "requests has finished, or ask an operator to raise {field}."
)
_BUDGET = (
    "The tenant's {what} ({field} = {shown}) has no room left for this request ({prompt} and "
    "at least {least}). It resets at {resets}, in {wait}; until then an operator can raise "
    "{field}."
)
_NEXT_MONTH = "the 1st of next month"

KINDS: tuple[LimitKind, ...] = (
    LimitKind(
        name="rpm",
        section="limits",
        field="requests_per_minute",
        mechanism="bucket",
        charge="requests",
        period="minute",
        what="requests per minute",
        description="Requests admitted per minute (token bucket, refilled continuously). "
        "None: unlimited.",
        option="--rpm",
        help="Requests per minute (0: none).",
        code="rate_limit_exceeded",
        refusal=_RETRY,
        too_large=_TOO_LARGE,
        headers=(
            b"x-ratelimit-limit-requests",
            b"x-ratelimit-remaining-requests",
            b"x-ratelimit-reset-requests",
        ),
    ),
    LimitKind(
        name="tpm",
        section="limits",
        field="tokens_per_minute",
        mechanism="bucket",
        charge="tokens",
        period="minute",
        what="tokens per minute",
        description="Prompt plus completion tokens per minute (reserved as prompt + max_tokens "
        "at admission, settled to the real count at the end). None: unlimited.",
        option="--tpm",
        help="Tokens per minute (0: none).",
        code="rate_limit_exceeded",
        refusal=_RETRY,
        too_large=_TOO_LARGE,
        headers=(
            b"x-ratelimit-limit-tokens",
            b"x-ratelimit-remaining-tokens",
            b"x-ratelimit-reset-tokens",
        ),
    ),
    LimitKind(
        name="conc",
        section="limits",
        field="concurrent_requests",
        mechanism="slots",
        charge="requests",
        period="",
        what="concurrent requests",
        description="Requests in flight at once. None: unlimited.",
        option="--concurrency",
        help="Requests in flight (0: none).",
        code="concurrency_limit",
        refusal=_SLOTS,
    ),
    LimitKind(
        name="day_tokens",
        section="budgets",
        field="daily_tokens",
        mechanism="budget",
        charge="tokens",
        period="day",
        what="daily token budget",
        description="Tokens per UTC day. None: unlimited.",
        option="--daily-tokens",
        help="Tokens per UTC day (0: none).",
        code="budget_exceeded",
        refusal=_BUDGET,
        resets="00:00 UTC",
    ),
    LimitKind(
        name="month_tokens",
        section="budgets",
        field="monthly_tokens",
        mechanism="budget",
        charge="tokens",
        period="month",
        what="monthly token budget",
        description="Tokens per UTC calendar month. None: unlimited.",
        option="--monthly-tokens",
        help="Tokens per UTC month (0: none).",
        code="budget_exceeded",
        refusal=_BUDGET,
        resets=_NEXT_MONTH,
    ),
    LimitKind(
        name="day_cost",
        section="budgets",
        field="daily_cost_usd",
        mechanism="budget",
        charge="cost",
        period="day",
        what="daily cost budget",
        description="Spend per UTC day, priced with the `pricing` table. None: unlimited.",
        option="--daily-cost",
        help="USD per UTC day (0: none).",
        code="budget_exceeded",
        refusal=_BUDGET,
        resets="00:00 UTC",
        usd=True,
    ),
    LimitKind(
        name="month_cost",
        section="budgets",
        field="monthly_cost_usd",
        mechanism="budget",
        charge="cost",
        period="month",
        what="monthly cost budget",
        description="Spend per UTC calendar month. None: unlimited.",
        option="--monthly-cost",
        help="USD per UTC month (0: none).",
        code="budget_exceeded",
        refusal=_BUDGET,
        resets=_NEXT_MONTH,
        usd=True,
    ),
)
