"""Per-step request statistics of the two pools in a running rollout.

Every gateway counts the finished live requests of its rollouts' models in memory, per
(rollout, step, pool): requests, errors, JSON-mode requests and how many of them came back as
valid JSON, and TTFT, ITL and E2E latencies in fixed-bucket histograms (``BUCKETS_S``), so
totals of several gateways add up and percentiles come from the sums. Every
``flush_interval_s`` the gateway upserts its cumulative rows into ``rollout_step_stats`` (key:
rollout, step, pool, gateway), which makes a repeated flush harmless; the controller sums the
rows of all gateways. The request path only touches dictionaries: no await, no I/O.

What counts:

- an **error** is a failure on the serving side (upstream errors, timeouts, the gateway's own
  5xx); a client's refused request (4xx validation, limits) or a client that went away is not;
- latencies only of successful requests; a non-streamed response's TTFT is its whole duration
  (the client's first token arrives with it); ITL per request is
  ``(duration - ttft) / (completion_tokens - 1)`` for streams with two tokens or more;
- JSON validity only for requests whose ``response_format.type`` is json_object or
  json_schema; the captured text must parse as JSON.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.background import Periodic
from tidegate.observability.records import RequestRecord
from tidegate.pipeline.completions import PreparedRequest
from tidegate.rollout.sync import ActiveRollout, PolicySync
from tidegate.store.db import transaction
from tidegate.store.errors import StoreError
from tidegate.store.models import RolloutStepStats

log = logging.getLogger(__name__)


def _log_spaced(low: float, high: float, per_decade: int) -> tuple[float, ...]:
    decades = math.log10(high / low)
    count = round(decades * per_decade)
    return tuple(round(low * 10 ** (i / per_decade), 6) for i in range(count + 1))


BUCKETS_S: tuple[float, ...] = _log_spaced(0.005, 120.0, 10)
"""Upper bounds of the latency buckets, 5 ms to about 120 s, ten per decade (each about 26%
wider than the one before); one more bucket catches everything slower."""

HISTOGRAMS = ("ttft", "itl", "e2e")
JSON_FORMATS = frozenset({"json_object", "json_schema"})
_SERVER_OUTCOMES = frozenset({"upstream", "timeout"})


def empty_histogram() -> list[int]:
    return [0] * (len(BUCKETS_S) + 1)


def bucket_of(value_s: float) -> int:
    return bisect.bisect_left(BUCKETS_S, value_s)


def percentile(counts: list[int], q: float) -> float | None:
    """The q-quantile (0..1) of a histogram, interpolated linearly inside its bucket (as
    Prometheus' histogram_quantile does); the last bound for the overflow bucket; None when
    empty."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            if index >= len(BUCKETS_S):
                return BUCKETS_S[-1]
            lower = BUCKETS_S[index - 1] if index else 0.0
            return lower + (BUCKETS_S[index] - lower) * max(0.0, rank - seen) / count
        seen += count
    return BUCKETS_S[-1]


@dataclass(slots=True)
class PoolTotals:
    """One pool's request figures during one step (or several, or of several gateways)."""

    requests: int = 0
    errors: int = 0
    json_requests: int = 0
    json_valid: int = 0
    histograms: dict[str, list[int]] = field(
        default_factory=lambda: {name: empty_histogram() for name in HISTOGRAMS}
    )

    def add(self, other: PoolTotals) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.json_requests += other.json_requests
        self.json_valid += other.json_valid
        for name in HISTOGRAMS:
            mine = self.histograms[name]
            for index, count in enumerate(other.histograms.get(name, ())[: len(mine)]):
                mine[index] += count

    def observe_latency(self, name: str, value_s: float) -> None:
        self.histograms[name][bucket_of(value_s)] += 1

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def json_validity(self) -> float | None:
        return self.json_valid / self.json_requests if self.json_requests else None

    def p(self, name: str, q: float) -> float | None:
        return percentile(self.histograms[name], q)

    @classmethod
    def summed(cls, parts: Iterable[PoolTotals]) -> PoolTotals:
        total = cls()
        for part in parts:
            total.add(part)
        return total


def is_error(record: RequestRecord) -> bool:
    """A failure of the serving side, not a refused request or a client that left."""
    if record.outcome in _SERVER_OUTCOMES:
        return True
    return record.status >= 500 and record.outcome not in ("ok", "client_closed")


def is_json_mode(payload: Mapping[str, Any] | None) -> bool:
    if payload is None:
        return False
    value = payload.get("response_format")
    return isinstance(value, dict) and value.get("type") in JSON_FORMATS


def valid_json(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return bool(text.strip())


def count_request(
    totals: PoolTotals, record: RequestRecord, *, duration_s: float, json_mode: bool
) -> None:
    """Add one finished request to a pool's totals."""
    totals.requests += 1
    if is_error(record):
        totals.errors += 1
    ok = record.outcome == "ok"
    if ok:
        ttft = record.ttft_s if record.ttft_s is not None else duration_s
        totals.observe_latency("ttft", ttft)
        totals.observe_latency("e2e", duration_s)
        tokens = record.completion_tokens
        if record.stream and record.ttft_s is not None and tokens >= 2:
            totals.observe_latency("itl", max(0.0, duration_s - ttft) / (tokens - 1))
    if json_mode and record.outcome != "client_closed":
        totals.json_requests += 1
        if ok and record.capture is not None and valid_json(record.capture.text):
            totals.json_valid += 1


StatsKey = tuple[str, int, str]
"""(rollout id, step index, pool)."""


class StepStats:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        sync: PolicySync,
        gateway_id: str,
        flush_interval_s: float,
    ) -> None:
        self._sessions = sessions
        self._sync = sync
        self._gateway_id = gateway_id
        self._totals: dict[StatsKey, PoolTotals] = {}
        self._dirty: set[StatsKey] = set()
        self._periodic = Periodic(
            name="rollout-step-stats", interval_s=flush_interval_s, step=self.flush
        )

    def wants_capture(self, request: PreparedRequest, record: RequestRecord) -> bool:
        """The request asked for JSON and its model is in a running rollout."""
        rollout = self._sync.rollout_for(record.model)
        return rollout is not None and rollout.running and is_json_mode(request.payload)

    def observe(
        self, record: RequestRecord, *, duration_s: float, payload: Mapping[str, Any] | None
    ) -> None:
        rollout = self._sync.rollout_for(record.model)
        if rollout is None or not rollout.running:
            return
        # The request counts for the pool the split chose: when that pool failed before the
        # first byte and another served it (or none did), that is the chosen pool's error.
        pool = record.split_pool or record.pool
        if pool not in (rollout.stable_pool, rollout.candidate_pool):
            return  # not served at all, or by a fallback pool outside the comparison
        key = (rollout.id, rollout.step_index, pool)
        totals = self._totals.get(key)
        if totals is None:
            totals = self._totals[key] = PoolTotals()
        if record.pool != pool and (record.pool is not None or is_error(record)):
            totals.requests += 1
            totals.errors += 1
        elif record.pool == pool:
            count_request(totals, record, duration_s=duration_s, json_mode=is_json_mode(payload))
        self._dirty.add(key)

    def totals(self) -> dict[StatsKey, PoolTotals]:
        """This gateway's cumulative totals (for tests and debugging)."""
        return dict(self._totals)

    async def flush(self) -> None:
        """Write the changed totals; on a store failure they stay dirty for the next flush."""
        dirty, self._dirty = self._dirty, set()
        if not dirty:
            return
        try:
            async with transaction(self._sessions, "write rollout statistics") as session:
                for key in sorted(dirty):
                    await self._upsert(session, key, self._totals[key])
        except StoreError:
            self._dirty |= dirty
            raise
        self._forget_old(dirty)

    async def _upsert(self, session: AsyncSession, key: StatsKey, totals: PoolTotals) -> None:
        rollout_id, step_index, pool = key
        row = await session.get(RolloutStepStats, (rollout_id, step_index, pool, self._gateway_id))
        if row is None:
            row = RolloutStepStats(
                rollout_id=rollout_id, step_index=step_index, pool=pool, gateway_id=self._gateway_id
            )
            session.add(row)
        row.requests = totals.requests
        row.errors = totals.errors
        row.json_requests = totals.json_requests
        row.json_valid = totals.json_valid
        row.histograms = {name: list(counts) for name, counts in totals.histograms.items()}
        row.updated_at = datetime.now(UTC)

    def _forget_old(self, flushed: set[StatsKey]) -> None:
        # Rows hold cumulative values, so a step's totals stay while its rollout is active (a
        # late request of an old step must add to them, not restart them); once the rollout is
        # over nothing observes it any more and its written totals can go.
        active = {rollout.id for rollout in self._active()}
        for key in flushed:
            if key[0] not in active and key not in self._dirty:
                self._totals.pop(key, None)

    def _active(self) -> list[ActiveRollout]:
        rollouts = (self._sync.rollout_for(model) for model in self._sync.watched)
        return [rollout for rollout in rollouts if rollout is not None]

    async def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()
        with contextlib.suppress(StoreError):
            await self.flush()  # the last figures of a gateway that shuts down


async def step_totals(session: AsyncSession, rollout_id: str) -> dict[tuple[int, str], PoolTotals]:
    """Every gateway's rows of the rollout summed per (step, pool)."""
    rows = await session.scalars(
        select(RolloutStepStats).where(RolloutStepStats.rollout_id == rollout_id)
    )
    totals: dict[tuple[int, str], PoolTotals] = {}
    for row in rows:
        part = PoolTotals(
            requests=row.requests,
            errors=row.errors,
            json_requests=row.json_requests,
            json_valid=row.json_valid,
            histograms=_histograms(row.histograms),
        )
        totals.setdefault((row.step_index, row.pool), PoolTotals()).add(part)
    return totals


def _histograms(stored: dict[str, list[int]] | None) -> dict[str, list[int]]:
    # Rows written with another bucket layout would not add up; they are read as empty.
    result = {name: empty_histogram() for name in HISTOGRAMS}
    for name in HISTOGRAMS:
        counts = (stored or {}).get(name)
        if isinstance(counts, list) and len(counts) == len(BUCKETS_S) + 1:
            result[name] = [int(count) for count in counts]
    return result
