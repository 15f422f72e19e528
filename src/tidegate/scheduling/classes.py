"""Scheduling classes: which class a request belongs to, and what engines are told.

The class comes from the tenant's tier (interactive and internal: ``interactive``; batch:
``batch``), a key may override it (``KeySettings.priority``), and the request header
``x-tidegate-priority`` may only lower it. ``x-tidegate-deadline-ms`` bounds how long the request
may wait in the gateway's queue.
"""

from __future__ import annotations

import math
from typing import Literal

from tidegate.errors import InvalidRequestError

PriorityClass = Literal["interactive", "batch"]
CLASSES: tuple[PriorityClass, ...] = ("interactive", "batch")
"""Most urgent first."""

RANK: dict[str, int] = {"interactive": 0, "batch": 1}
"""Lower is more urgent."""
_TIER_CLASS: dict[str, PriorityClass] = {
    "interactive": "interactive",
    "internal": "interactive",
    "batch": "batch",
}

ENGINE_PRIORITY: dict[PriorityClass, int] = {"interactive": 0, "batch": 10}
"""vLLM's ``priority`` request field (lower is served first) for each class."""

PRIORITY_HEADER = b"x-tidegate-priority"
DEADLINE_HEADER = b"x-tidegate-deadline-ms"


def tier_class(tier: str) -> PriorityClass:
    """The class a tenant tier's requests get when the key sets none."""
    return _TIER_CLASS.get(tier, "interactive")


def resolve_class(
    tier: str, key_priority: PriorityClass | None, header: str | None
) -> PriorityClass:
    """The request's class: the key's override or its tenant tier's, lowered by the header."""
    base: PriorityClass = key_priority or tier_class(tier)
    if header is None:
        return base
    wanted = header.strip().lower()
    if wanted not in RANK:
        raise InvalidRequestError(
            f"The header x-tidegate-priority must be one of {', '.join(CLASSES)}, "
            f"not {header[:40]!r}.",
            param="x-tidegate-priority",
        )
    # A header may only lower the class: the lower of the two wins.
    return wanted if RANK[wanted] > RANK[base] else base  # type: ignore[return-value]


def parse_deadline_ms(value: str | None) -> float | None:
    """The header's relative deadline in seconds (None when absent)."""
    if value is None:
        return None
    try:
        ms = float(value)
    except ValueError:
        ms = math.nan
    if not math.isfinite(ms) or ms < 0:
        raise InvalidRequestError(
            "The header x-tidegate-deadline-ms must be a non-negative number of milliseconds "
            f"(how long the request may wait for a slot), not {value[:40]!r}.",
            param="x-tidegate-deadline-ms",
        )
    return ms / 1000.0
