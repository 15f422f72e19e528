"""Reading shadow comparisons back: a side-by-side summary per (primary pool, shadow pool) and
the rows themselves, newest first, for the admin API, the CLI and the rollout report.

Summaries are computed here from the newest ``SUMMARY_ROWS`` comparisons in range (percentiles
need the values, and the JSON columns are not portable to aggregate in SQL).
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.percentiles import percentile
from tidegate.store.errors import translating_errors
from tidegate.store.models import ShadowComparison

SUMMARY_ROWS = 50_000


@dataclass(frozen=True, slots=True)
class SideSummary:
    """One side's figures; rates are None where no comparison had the check."""

    errors: int
    error_rate: float
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    itl_p50_ms: float | None
    itl_p95_ms: float | None
    e2e_p50_ms: float | None
    e2e_p95_ms: float | None
    json_valid_rate: float | None
    tool_calls_ok_rate: float | None
    refusal_rate: float | None


@dataclass(frozen=True, slots=True)
class PairSummary:
    primary_pool: str
    shadow_pool: str
    count: int
    primary: SideSummary
    shadow: SideSummary
    difference_rate: float | None
    """Share of the pairs where both answered whose texts differ."""
    mean_similarity: float | None


@dataclass(frozen=True, slots=True)
class ComparisonRow:
    id: int
    request_id: str
    model: str
    tenant_id: str
    primary_pool: str
    shadow_pool: str
    created_at: datetime
    primary: dict[str, Any]
    shadow: dict[str, Any]
    outputs_differ: bool | None
    similarity: float | None
    expires_at: datetime


class ShadowReports:
    def __init__(self, *, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def summary(
        self, model: str, since: datetime | None = None
    ) -> builtins.list[PairSummary]:
        """Per (primary pool, shadow pool), ordered by pool names."""
        c = ShadowComparison
        query = select(
            c.primary_pool, c.shadow_pool, c.primary, c.shadow, c.outputs_differ, c.similarity
        ).where(c.model == model)
        if since is not None:
            query = query.where(c.created_at >= since)
        query = query.order_by(c.created_at.desc()).limit(SUMMARY_ROWS)
        with translating_errors("read shadow comparisons"):
            async with self._sessions() as session:
                rows = (await session.execute(query)).all()
        groups: dict[tuple[str, str], list[Any]] = {}
        for row in rows:
            groups.setdefault((row.primary_pool, row.shadow_pool), []).append(row)
        return [summarise(pair, groups[pair]) for pair in sorted(groups)]

    async def list(
        self, model: str, *, limit: int = 20, after: int | None = None
    ) -> builtins.list[ComparisonRow]:
        """Newest first; ``after``: the last id of the previous page. Up to ``limit`` rows."""
        c = ShadowComparison
        query = select(c).where(c.model == model)
        if after is not None:
            query = query.where(c.id < after)
        query = query.order_by(c.id.desc()).limit(limit)
        with translating_errors("read shadow comparisons"):
            async with self._sessions() as session:
                found = (await session.scalars(query)).all()
        return [
            ComparisonRow(
                id=r.id,
                request_id=r.request_id,
                model=r.model,
                tenant_id=r.tenant_id,
                primary_pool=r.primary_pool,
                shadow_pool=r.shadow_pool,
                created_at=r.created_at,
                primary=r.primary,
                shadow=r.shadow,
                outputs_differ=r.outputs_differ,
                similarity=r.similarity,
                expires_at=r.expires_at,
            )
            for r in found
        ]


def summarise(pair: tuple[str, str], rows: Sequence[Any]) -> PairSummary:
    """``rows`` carry ``primary``, ``shadow``, ``outputs_differ`` and ``similarity``."""
    differ = [r.outputs_differ for r in rows if r.outputs_differ is not None]
    similar = [r.similarity for r in rows if r.similarity is not None]
    return PairSummary(
        primary_pool=pair[0],
        shadow_pool=pair[1],
        count=len(rows),
        primary=side_summary([r.primary for r in rows]),
        shadow=side_summary([r.shadow for r in rows]),
        difference_rate=_rate(differ),
        mean_similarity=round(sum(similar) / len(similar), 4) if similar else None,
    )


def side_summary(sides: Sequence[dict[str, Any]]) -> SideSummary:
    """Latency percentiles over the answers without error; rates over those with the check."""
    answered = [s for s in sides if not s.get("error")]
    errors = len(sides) - len(answered)

    def quantiles(name: str) -> tuple[float | None, float | None]:
        values = [float(s[name]) for s in answered if s.get(name) is not None]
        return _round(percentile(values, 50)), _round(percentile(values, 95))

    ttft, itl, e2e = quantiles("ttft_ms"), quantiles("itl_ms"), quantiles("e2e_ms")
    return SideSummary(
        errors=errors,
        error_rate=round(errors / len(sides), 4) if sides else 0.0,
        ttft_p50_ms=ttft[0],
        ttft_p95_ms=ttft[1],
        itl_p50_ms=itl[0],
        itl_p95_ms=itl[1],
        e2e_p50_ms=e2e[0],
        e2e_p95_ms=e2e[1],
        json_valid_rate=_rate([s.get("json_valid") for s in sides]),
        tool_calls_ok_rate=_rate([s.get("tool_calls_ok") for s in sides]),
        refusal_rate=_rate([s.get("refusal") for s in sides]),
    )


def _rate(flags: Sequence[bool | None]) -> float | None:
    known = [flag for flag in flags if flag is not None]
    return round(sum(known) / len(known), 4) if known else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
