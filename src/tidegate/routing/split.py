"""A weighted, sticky split of one public model name's traffic between pools.

Each request's sticky key hashes to a point in [0, 1): with ``sticky_by: session`` its
x-tidegate-session-id, else its conversation (the system prompt and first messages, which every
later turn repeats), else its tenant; with ``sticky_by: tenant`` its tenant. The
pools own consecutive ranges of that interval in the split's order, sized by their weights. The
same key always lands in the same range, so a conversation stays on one version; and since the
first pool's range only grows from the low end as its share rises, raising a candidate's share
(listed first) moves sessions onto it and never off it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tidegate.routing.affinity import affinity_key

StickyBy = Literal["session", "tenant"]
_SCALE = float(1 << 64)
_CONVERSATION_CHARS = 2048
"""How much of a conversation's opening its sticky key hashes."""


def sticky_point(key: str) -> float:
    """The key's point in [0, 1): stable across processes and gateway replicas."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


@dataclass(slots=True)
class TrafficSplit:
    weights: tuple[tuple[str, float], ...]
    """(pool, weight) in order; weights need not add up to anything."""
    sticky_by: StickyBy = "session"
    _bounds: tuple[tuple[float, str], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        total = sum(weight for _, weight in self.weights if weight > 0)
        if total <= 0:
            raise ValueError("a traffic split needs at least one pool with a positive weight")
        bounds = []
        upper = 0.0
        for pool, weight in self.weights:
            if weight > 0:
                upper += weight / total
                bounds.append((upper, pool))
        self._bounds = tuple(bounds)

    def pick(self, *, tenant: str, session_id: str | None, payload: Mapping[str, Any]) -> str:
        """The pool a request goes to (see the module docs for its sticky key)."""
        if self.sticky_by == "session":
            if session_id:
                return self.choose("s:" + session_id)
            conversation = affinity_key(payload, session_id=None, prefix_chars=_CONVERSATION_CHARS)
            if conversation is not None:
                return self._at(conversation / _SCALE)
        return self.choose("t:" + tenant)

    def choose(self, key: str) -> str:
        """The pool the key's requests go to."""
        return self._at(sticky_point(key))

    def _at(self, point: float) -> str:
        for upper, pool in self._bounds:
            if point < upper:
                return pool
        return self._bounds[-1][1]  # rounding at the very top

    def share(self, pool: str) -> float:
        """The pool's share of traffic, 0 to 1."""
        lower = 0.0
        for upper, name in self._bounds:
            if name == pool:
                return upper - lower
            lower = upper
        return 0.0
