"""Checks of operator input to traffic policies and version records (no I/O).

Each failure is an ``InvalidRequestError`` whose message says what was wrong and how to fix it,
so the admin API answers a clear 400 and the CLI prints one line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tidegate.errors import InvalidRequestError, PermissionDeniedError
from tidegate.routing.split import StickyBy
from tidegate.tenancy.actors import Actor

STICKY_BY: tuple[StickyBy, ...] = ("session", "tenant")


def operator_only(actor: Actor) -> None:
    if not actor.is_operator:
        raise PermissionDeniedError(
            "Only the operator (an admin key of the system tenant) may manage model traffic, "
            "versions, shadow comparisons and rollouts: they span every tenant.",
            code="operator_only",
        )


def check_pool(pool: str, known: Sequence[str] | None, *, param: str) -> str:
    """``known``: the pools of the routing table; None: not checked (no routing table)."""
    if known is not None and pool not in known:
        raise InvalidRequestError(
            f"Unknown pool '{pool}'. Pools on this gateway: {', '.join(known) or 'none'}.",
            param=param,
        )
    return pool


def check_weights(
    weights: Sequence[tuple[str, float]], known: Sequence[str] | None
) -> tuple[tuple[str, float], ...]:
    if not weights:
        raise InvalidRequestError(
            'A split needs at least one pool with a weight, for example {"stable": 95, '
            '"candidate": 5}.',
            param="weights",
        )
    seen: set[str] = set()
    for pool, weight in weights:
        check_pool(pool, known, param="weights")
        if pool in seen:
            raise InvalidRequestError(
                f"The pool '{pool}' appears twice in the weights; give each pool one weight.",
                param="weights",
            )
        seen.add(pool)
        if not math.isfinite(weight) or weight < 0:
            raise InvalidRequestError(
                f"The weight of pool '{pool}' must be a number >= 0 (got {weight}).",
                param="weights",
            )
    if not any(weight > 0 for _, weight in weights):
        raise InvalidRequestError(
            "At least one pool needs a weight > 0; to send everything back to the stable "
            "pool use rollback.",
            param="weights",
        )
    return tuple((pool, float(weight)) for pool, weight in weights)


def check_sticky(value: str) -> StickyBy:
    for sticky in STICKY_BY:
        if value == sticky:
            return sticky
    raise InvalidRequestError(
        "sticky_by must be 'session' (x-tidegate-session-id, else the conversation's opening, "
        f"else the tenant) or 'tenant' (got '{value}').",
        param="sticky_by",
    )


def check_sample(sample: float) -> float:
    if not math.isfinite(sample) or not 0 <= sample <= 1:
        raise InvalidRequestError(
            f"The shadow sample is the share of requests mirrored: a number from 0 to 1, for "
            f"example 0.1 for 10% (got {sample}).",
            param="shadow.sample",
        )
    return float(sample)


def check_text(value: str, *, param: str, max_len: int, required: bool = True) -> str:
    value = value.strip()
    if (required and not value) or len(value) > max_len:
        need = "1" if required else "0"
        raise InvalidRequestError(
            f"'{param}' needs {need} to {max_len} characters (got {len(value)}).", param=param
        )
    return value
