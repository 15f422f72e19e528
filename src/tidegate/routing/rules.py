"""Routes: which chain of pools serves a request for a public model name.

Precedence, documented in the README: a route's rules are checked in config order and the first
one whose conditions all hold picks the chain; when none does, the route's default chain serves.
Conditions: the tenant's tier, the prompt's token count, the response_format type and the
x-tidegate-quality header, and the time of day (a rule's cron ``window`` in its time zone). A
model name with no configured route gets an implicit one: the pools of the upstreams (and local
engines) that name it, in config order.

Every request served says why its pool served it (``x-tidegate-route-reason`` and the usage
row's ``route_reason``): the branch that picked the chain (``default``, ``rule:<i>``, or
``time_window:<i>`` for a rule with a window), then, unless the chain's first pool served in
config order, how the pool was picked: ``/split``, ``/cheapest``, ``/only_meeting_target``,
``/fastest`` (``select: cheapest``), or ``/fallback`` and ``/spillover`` (an earlier pool of the
chain was passed over). Each branch holds all its reasons made once, so no request formats one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from tidegate.config import ModelRoute, RouteRule
from tidegate.routing.split import TrafficSplit
from tidegate.routing.windows import Clock, CompiledWindow

# How the serving pool was picked within its chain: indexes into ``Branch.reasons``.
FIRST: Final = 0
SPLIT: Final = 1
CHEAPEST: Final = 2
ONLY_MEETING_TARGET: Final = 3
FASTEST: Final = 4
FALLBACK: Final = 5
SPILLOVER: Final = 6
PICKS: Final = ("", "split", "cheapest", "only_meeting_target", "fastest", "fallback", "spillover")


@dataclass(frozen=True, slots=True)
class Branch:
    """A chain of pool names with how it was chosen and how its first pool is picked."""

    pools: tuple[str, ...]
    cheapest: bool
    """select: cheapest (else config order)."""
    reasons: tuple[str, ...]
    """Per pick (``FIRST`` ... ``SPILLOVER``): the route reason, as the usage row keeps it."""
    headers: tuple[bytes, ...]
    """The same, as the x-tidegate-route-reason header's value."""

    @classmethod
    def make(cls, pools: tuple[str, ...], base: str, *, cheapest: bool) -> Branch:
        reasons = tuple(base if not pick else f"{base}/{pick}" for pick in PICKS)
        return cls(pools, cheapest, reasons, tuple(r.encode() for r in reasons))


@dataclass(frozen=True, slots=True)
class RequestTraits:
    """What rules may look at."""

    tier: str
    prompt_tokens: int | None
    response_format: str
    """text, json_object or json_schema."""
    quality: str | None
    """The x-tidegate-quality header, if sent."""


def response_format_type(payload: Mapping[str, Any]) -> str:
    value = payload.get("response_format")
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        return str(value["type"])
    return "text"


def _matches(rule: RouteRule, window: CompiledWindow | None, traits: RequestTraits) -> bool:
    if window is not None and not window.is_open():
        return False
    if rule.tiers and traits.tier not in rule.tiers:
        return False
    if rule.min_prompt_tokens is not None and (
        traits.prompt_tokens is None or traits.prompt_tokens < rule.min_prompt_tokens
    ):
        return False
    if rule.max_prompt_tokens is not None and (
        traits.prompt_tokens is None or traits.prompt_tokens > rule.max_prompt_tokens
    ):
        return False
    if rule.response_format and traits.response_format not in rule.response_format:
        return False
    return not rule.quality or traits.quality in rule.quality


@dataclass(slots=True)
class Route:
    model: str
    pools: tuple[str, ...]
    """The default chain of pool names."""
    rules: tuple[tuple[RouteRule, tuple[str, ...]], ...] = ()
    """Each rule with its chain (kept as a tuple, so choosing one allocates nothing)."""
    branches: tuple[tuple[RouteRule, CompiledWindow | None, Branch], ...] = ()
    """Each rule with its compiled window and its branch, made once from ``rules``."""
    spillover: bool = False
    cheapest: bool = False
    """The default chain selects its cheapest pool meeting the TTFT target (select: cheapest)."""
    expected_completion_tokens: int = 256
    """select: cheapest: the completion tokens a request is priced at, at most."""
    explicit: bool = False
    """Configured under routing.routes (else implicit, grown as replicas join)."""
    split: TrafficSplit | None = None
    """A weighted split between pools, set at runtime from the store's traffic policy: the
    chosen pool goes first and the rest of the chain stays behind it as fallback."""

    _default: Branch | None = None
    """The default chain's branch, remade when ``pools`` changes (implicit routes grow)."""

    @classmethod
    def from_config(cls, route: ModelRoute, *, clock: Clock = time.time) -> Route:
        """``clock``: what rule windows read the time from."""
        branches = tuple(
            (
                rule,
                None if rule.window is None else CompiledWindow(rule.window, clock),
                Branch.make(
                    tuple(rule.pools),
                    f"time_window:{index}" if rule.window is not None else f"rule:{index}",
                    cheapest=(rule.select or route.select) == "cheapest",
                ),
            )
            for index, rule in enumerate(route.rules)
        )
        return cls(
            model=route.model,
            pools=tuple(route.pools),
            rules=tuple((rule, branch.pools) for rule, _, branch in branches),
            branches=branches,
            spillover=route.spillover,
            explicit=True,
            cheapest=route.select == "cheapest",
            expected_completion_tokens=route.expected_completion_tokens,
        )

    def apply_split(self, split: TrafficSplit | None) -> None:
        """Route by ``split`` from now on (None: no split; the store's traffic policy sets it)."""
        self.split = split

    def extend(self, pool: str) -> None:
        """Append a pool to an implicit route's chain (a replica of a new pool joined)."""
        if not self.explicit and pool not in self.pools:
            self.pools = (*self.pools, pool)

    def chain(self, traits: RequestTraits) -> tuple[str, ...]:
        """The pool names to try, in order."""
        return self.branch(traits).pools

    def branch(self, traits: RequestTraits | None) -> Branch:
        """The first matching rule's branch, else the default chain's (``traits`` None: the
        route has no rules, or the caller has nothing to match)."""
        if traits is not None:
            for rule, window, branch in self.branches:
                if _matches(rule, window, traits):
                    return branch
        default = self._default
        if default is None or default.pools is not self.pools:
            default = self._default = Branch.make(self.pools, "default", cheapest=self.cheapest)
        return default
