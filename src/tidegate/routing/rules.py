"""Routes: which chain of pools serves a request for a public model name.

Precedence, documented in the README: a route's rules are checked in config order and the first
one whose conditions all hold picks the chain; when none does, the route's default chain serves.
Conditions: the tenant's tier, the prompt's token count, the response_format type and the
x-tidegate-quality header. A model name with no configured route gets an implicit one: the pools
of the upstreams (and local engines) that name it, in config order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tidegate.config import ModelRoute, RouteRule
from tidegate.routing.split import TrafficSplit


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


def _matches(rule: RouteRule, traits: RequestTraits) -> bool:
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
    spillover: bool = False
    explicit: bool = False
    """Configured under routing.routes (else implicit, grown as replicas join)."""
    split: TrafficSplit | None = None
    """A weighted split between pools, set at runtime from the store's traffic policy: the
    chosen pool goes first and the rest of the chain stays behind it as fallback."""

    @classmethod
    def from_config(cls, route: ModelRoute) -> Route:
        return cls(
            model=route.model,
            pools=tuple(route.pools),
            rules=tuple((rule, tuple(rule.pools)) for rule in route.rules),
            spillover=route.spillover,
            explicit=True,
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
        for rule, pools in self.rules:
            if _matches(rule, traits):
                return pools
        return self.pools
