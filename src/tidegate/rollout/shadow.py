"""Shadow traffic: mirroring sampled live requests to a shadow pool (owned by the shadow
helper; see its module docs once written)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.gateway.completions import PreparedRequest
from tidegate.metering import UsageMeter
from tidegate.observability.records import RequestRecord
from tidegate.rollout.metrics import RolloutMetrics
from tidegate.rollout.sync import ShadowTarget
from tidegate.routing.replicas import RoutingTable
from tidegate.upstream.client import Provider


class ShadowMirror:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        routing: RoutingTable,
        providers: dict[str, Provider],
        meter: UsageMeter | None,
        metrics: RolloutMetrics,
        redact: Callable[[str], str],
        max_concurrency: int,
        timeout_s: float,
    ) -> None:
        self._sessions = sessions

    def maybe_mirror(
        self, request: PreparedRequest, record: RequestRecord, target: ShadowTarget | None
    ) -> bool:
        """Mirror the request when ``target`` samples it; True when it was mirrored (the
        primary's response must then be captured for the comparison)."""
        return False  # placeholder until implemented

    def primary_finished(self, record: RequestRecord, *, duration_s: float) -> None:
        return None  # placeholder until implemented

    async def start(self) -> None:
        return None  # placeholder until implemented

    async def stop(self) -> None:
        """Wait briefly for mirrored requests in flight, then cancel them; write what is left."""
        return None  # placeholder until implemented
