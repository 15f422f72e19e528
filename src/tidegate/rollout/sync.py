"""Each gateway's copy of the store's traffic policies and running rollouts.

Every ``rollouts.sync_interval_s`` (and at once after an admin change made through this gateway)
the policies are re-read and applied to the routing table: a route's ``split`` is set or
cleared, the shadow targets and the active rollouts are replaced. Requests read these without a
lock or an await.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.routing.replicas import RoutingTable


@dataclass(frozen=True, slots=True)
class ShadowTarget:
    pool: str
    sample: float
    """The share of requests mirrored, 0 to 1."""


@dataclass(frozen=True, slots=True)
class ActiveRollout:
    """A running or paused rollout, as the request path needs it."""

    id: str
    model: str
    step_index: int
    stable_pool: str
    candidate_pool: str
    running: bool


class PolicySync:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        routing: RoutingTable,
        interval_s: float,
    ) -> None:
        self._sessions = sessions
        self._routing = routing
        self._interval_s = interval_s
        self._watched: frozenset[str] = frozenset()
        self._shadows: dict[str, ShadowTarget] = {}
        self._rollouts: dict[str, ActiveRollout] = {}

    @property
    def watched(self) -> Set[str]:
        """Models with a split, a shadow or an active rollout."""
        return self._watched

    def shadow_for(self, model: str) -> ShadowTarget | None:
        return self._shadows.get(model)

    def rollout_for(self, model: str) -> ActiveRollout | None:
        return self._rollouts.get(model)

    async def sync_now(self) -> None:
        """Read the policies and rollouts and apply them."""
        return None  # placeholder until implemented

    async def start(self) -> None:
        return None  # placeholder until implemented

    async def stop(self) -> None:
        return None  # placeholder until implemented
