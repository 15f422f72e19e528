"""Shadow traffic: mirroring sampled live requests to a shadow pool, off the primary's path.

``maybe_mirror`` runs on the request path, so it only draws, checks a counter and creates one
task (no await, no I/O). The task sends the same request to the shadow pool
(``shadow_call``), meters the shadow's tokens as a ``shadow`` usage event (never charged:
budgets and limits count ``CHARGED_KINDS`` only, and the shadow never meets the limiter or the
scheduler), waits for the primary to finish (``primary_finished``, told by the tap), and
queues a ``ShadowComparison`` row; a background writer stores the rows in batches.

``max_concurrency`` bounds the shadow exchanges in flight in this gateway; a request sampled
while they are all busy is dropped and counted. A task that already has its shadow's answer
and waits for the primary no longer holds a slot.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.background import Periodic, TaskSet
from tidegate.metering import UsageEvent, UsageMeter
from tidegate.observability.records import RequestRecord
from tidegate.pipeline.completions import PreparedRequest
from tidegate.protocol.requests import CompletionRequest
from tidegate.rollout.compare import Side, compare, expectations, primary_side
from tidegate.rollout.metrics import RolloutMetrics
from tidegate.rollout.shadow_call import ShadowResult, call_shadow, shadow_request
from tidegate.rollout.sync import ShadowTarget
from tidegate.routing.replicas import RoutingTable
from tidegate.store.db import transaction
from tidegate.store.errors import StoreError
from tidegate.store.models import ShadowComparison
from tidegate.upstream.client import Provider

logger = logging.getLogger(__name__)

_MAX_QUEUED_ROWS = 10_000
"""Rows kept while the store refuses them; older ones are dropped beyond this."""
_STATUS = {"ok": 200, "error": 502, "timeout": 504}
_USAGE_OUTCOME = {"ok": "ok", "error": "upstream", "timeout": "timeout"}


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
        rng: Callable[[], float] = random.random,
        flush_interval_s: float = 1.0,
        stop_grace_s: float = 2.0,
        retention_days: int = 30,
    ) -> None:
        """``rng``: the sampling draw in [0, 1) (tests pass their own). ``timeout_s`` bounds
        the shadow's exchange and, separately, the wait for the primary to finish."""
        self._sessions = sessions
        self._routing = routing
        self._providers = providers
        self._meter = meter
        self._metrics = metrics
        self._redact = redact
        self._max_concurrency = max_concurrency
        self._timeout_s = timeout_s
        self._rng = rng
        self._stop_grace_s = stop_grace_s
        self._retention_days = retention_days
        self._in_flight = 0
        self._primaries: dict[int, asyncio.Future[float | None]] = {}
        """id(record) → the primary's duration, once the tap reports it finished."""
        self._tasks = TaskSet()
        self._rows: list[dict[str, Any]] = []
        self._writer = Periodic(
            name="shadow-comparisons", interval_s=flush_interval_s, step=self._flush
        )
        self._open = False

    @property
    def in_flight(self) -> int:
        """Shadow exchanges in progress."""
        return self._in_flight

    def maybe_mirror(
        self, request: PreparedRequest, record: RequestRecord, target: ShadowTarget | None
    ) -> bool:
        """Mirror the request when ``target`` samples it; True when it was mirrored (the
        primary's response must then be captured for the comparison)."""
        if target is None or not self._open or self._rng() >= target.sample:
            return False
        if request.chain and request.chain[0].name == target.pool:
            return False  # the split sent it to the shadow pool itself: nothing to compare
        if self._in_flight >= self._max_concurrency:
            self._metrics.shadow_requests.labels(record.model, "dropped").inc()
            return False
        self._in_flight += 1
        primary: asyncio.Future[float | None] = asyncio.get_running_loop().create_future()
        self._primaries[id(record)] = primary
        self._tasks.spawn(
            self._mirror(shadow_request(request.request), record, target.pool, primary)
        )
        self._metrics.shadow_requests.labels(record.model, "mirrored").inc()
        return True

    def primary_finished(self, record: RequestRecord, *, duration_s: float) -> None:
        primary = self._primaries.pop(id(record), None)
        if primary is not None and not primary.done():
            primary.set_result(duration_s)

    async def start(self) -> None:
        self._open = True
        self._writer.start()

    async def stop(self) -> None:
        """Wait briefly for mirrored requests in flight, then cancel them; write what is left."""
        self._open = False
        tasks = self._tasks.snapshot()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self._stop_grace_s)
            # Shadows that answered but whose primary is still going are written as they are;
            # they run on at the next loop turn, before the rest are cancelled.
            for primary in self._primaries.values():
                if not primary.done():
                    primary.set_result(None)
            await asyncio.sleep(0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._writer.stop()
        try:
            await self._flush()
        except StoreError as error:
            logger.warning("%d shadow comparisons were not stored: %s", len(self._rows), error)

    async def flush(self) -> None:
        """Store the comparisons queued so far (tests, and stop)."""
        await self._flush()

    async def _mirror(
        self,
        request: CompletionRequest,
        record: RequestRecord,
        pool_name: str,
        primary: asyncio.Future[float | None],
    ) -> None:
        try:
            try:
                result = await self._call(request, record, pool_name)
            finally:
                self._in_flight -= 1
            if result.outcome != "ok":
                self._metrics.shadow_requests.labels(record.model, result.outcome).inc()
            self._meter_usage(record, result)
            duration_s = await self._primary_duration(primary)
            if record.outcome != "client_closed":  # a half-read answer compares to nothing
                self._queue_row(record, request.fields, pool_name, result, duration_s)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must never reach the primary or the loop's handler
            logger.exception("shadow comparison of request %s failed", record.request_id)
        finally:
            self._primaries.pop(id(record), None)

    async def _call(
        self, request: CompletionRequest, record: RequestRecord, pool_name: str
    ) -> ShadowResult:
        try:
            pool = self._routing.pool(pool_name)
        except KeyError:
            return ShadowResult(Side(None, None, None, "unknown_pool"), None, "error")
        try:
            return await call_shadow(
                pool=pool,
                providers=self._providers,
                request=request,
                request_id=_shadow_id(record),
                timeout_s=self._timeout_s,
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("shadow request %s failed unexpectedly", record.request_id)
            return ShadowResult(Side(None, None, None, "internal"), None, "error")

    async def _primary_duration(self, primary: asyncio.Future[float | None]) -> float | None:
        """The primary's duration once it finished; None when it did not in time (or the
        gateway is stopping)."""
        try:
            return await asyncio.wait_for(primary, self._timeout_s)
        except TimeoutError:
            return None

    def _meter_usage(self, record: RequestRecord, result: ShadowResult) -> None:
        if self._meter is None or record.tenant_id is None:
            return
        side = result.side
        event = UsageEvent(
            request_id=_shadow_id(record),
            created_at=datetime.fromtimestamp(record.arrived_at, UTC),
            tenant_id=record.tenant_id,
            key_id=record.key_id,
            model=record.model,
            replica=result.replica,
            route=record.route,
            prompt_tokens=side.prompt_tokens,
            cached_tokens=0,
            completion_tokens=side.completion_tokens,
            cost_usd=0.0,  # the operator's experiment: never priced to the tenant
            ttft_ms=None if side.ttft_s is None else side.ttft_s * 1000,
            duration_ms=(side.e2e_s or 0.0) * 1000,
            status=_STATUS[result.outcome],
            outcome=_USAGE_OUTCOME[result.outcome],
            kind="shadow",
        )
        try:
            self._meter.record(event)
        except RuntimeError:  # the meter already stopped (shutdown)
            logger.warning("shadow usage of request %s not metered", record.request_id)

    def _queue_row(
        self,
        record: RequestRecord,
        payload: Mapping[str, Any],
        pool_name: str,
        result: ShadowResult,
        duration_s: float | None,
    ) -> None:
        primary = (
            primary_side(record, duration_s)
            if duration_s is not None
            else Side(record.ttft_s, None, None, "unfinished", capture=record.capture)
        )
        comparison = compare(
            primary,
            result.side,
            expectations(payload),
            keep_text=self._redact if record.log_prompt else None,
        )
        created_at = datetime.fromtimestamp(record.arrived_at, UTC)
        # Texts are kept as long as the tenant keeps its logged prompts, the rest by config.
        retention_days = record.prompt_retention_days if record.log_prompt else self._retention_days
        self._rows.append(
            {
                "request_id": record.request_id[:64],
                "model": record.model,
                "tenant_id": record.tenant_id or "",
                "primary_pool": record.pool or "",
                "shadow_pool": pool_name,
                "created_at": created_at,
                "primary": comparison.primary,
                "shadow": comparison.shadow,
                "outputs_differ": comparison.outputs_differ,
                "similarity": comparison.similarity,
                "expires_at": created_at + timedelta(days=retention_days),
            }
        )
        if len(self._rows) >= 200:
            self._writer.wake()

    async def _flush(self) -> None:
        rows, self._rows = self._rows, []
        if not rows:
            return
        try:
            async with transaction(self._sessions, "store shadow comparisons") as session:
                await session.execute(insert(ShadowComparison), rows)
        except BaseException:
            # Keep them for the next tick, within a bound: a long store outage loses the oldest.
            self._rows = (rows + self._rows)[-_MAX_QUEUED_ROWS:]
            raise


def _shadow_id(record: RequestRecord) -> str:
    """The shadow's own request id (its usage record's key, distinct from the primary's)."""
    return f"{record.request_id}:shadow"
