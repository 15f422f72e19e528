"""Reading usage back: rollups per tenant and day or model, spend so far, raw records.

Rollups aggregate at query time: the ``(tenant_id, created_at)`` index bounds the scan, and a
day's rows are summed in the database, so there is no second copy of the numbers to keep
consistent with replays. The day is the UTC calendar day, spelled per dialect.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
from sqlalchemy import ColumnElement, String, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.errors import InvalidRequestError
from tidegate.metering.events import CHARGED_KINDS, FIELD_NAMES, UsageEvent
from tidegate.store.db import transaction
from tidegate.store.models import UsageRecord

GroupBy = Literal["day", "model"]
Period = Literal["day", "month"]
MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class RollupRow:
    tenant_id: str
    day: str | None
    """YYYY-MM-DD (UTC) when grouped by day, else None."""
    model: str | None
    """The public model name when grouped by model, else None."""
    requests: int
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    cost_usd: float

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Spend:
    tokens: int
    """Prompt plus completion tokens, as budgets count them."""
    cost_usd: float


@dataclass(frozen=True, slots=True)
class RecentTokens:
    """Tokens of the requests that finished within a window, for a tenant and per key."""

    tenant: int
    by_key: dict[str, int]


@dataclass(frozen=True, slots=True)
class RecordPage:
    records: list[UsageEvent]
    next_cursor: str | None
    """Pass as `after` for the next page; None on the last page."""


class UsageQueries:
    def __init__(self, *, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def usage_rollup(
        self,
        tenant_id: str | None,
        since: datetime | None,
        until: datetime | None,
        group_by: GroupBy,
        *,
        include_shadow: bool = False,
    ) -> list[RollupRow]:
        """Totals per tenant and UTC day or model, for ``since <= created_at < until``."""
        u = UsageRecord
        async with transaction(self._sessions, "roll up usage") as session:
            bucket = _day(session) if group_by == "day" else u.model
            statement = (
                select(
                    u.tenant_id,
                    bucket.label("bucket"),
                    func.count(),
                    func.coalesce(func.sum(u.prompt_tokens), 0),
                    func.coalesce(func.sum(u.cached_tokens), 0),
                    func.coalesce(func.sum(u.completion_tokens), 0),
                    func.coalesce(func.sum(u.cost_usd), 0.0),
                )
                .where(*_filters(tenant_id, since, until, include_shadow=include_shadow))
                .group_by(u.tenant_id, bucket)
                .order_by(u.tenant_id, bucket)
            )
            rows = (await session.execute(statement)).all()
        return [
            RollupRow(
                tenant_id=row[0],
                day=str(row[1]) if group_by == "day" else None,
                model=str(row[1]) if group_by == "model" else None,
                requests=int(row[2]),
                prompt_tokens=int(row[3]),
                cached_tokens=int(row[4]),
                completion_tokens=int(row[5]),
                cost_usd=float(row[6]),
            )
            for row in rows
        ]

    async def spend_so_far(
        self, tenant_id: str, period: Period, *, now: datetime | None = None
    ) -> Spend:
        """What a tenant used in the current UTC day or calendar month (seeds budgets at
        start; usage still in a meter's buffer is not counted)."""
        now = (now or datetime.now(UTC)).astimezone(UTC)
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        if period == "month":
            start = start.replace(day=1)
        u = UsageRecord
        async with transaction(self._sessions, "read spend so far") as session:
            row = (
                await session.execute(
                    select(
                        func.coalesce(func.sum(u.prompt_tokens + u.completion_tokens), 0),
                        func.coalesce(func.sum(u.cost_usd), 0.0),
                    ).where(*_filters(tenant_id, start, None, include_shadow=False))
                )
            ).one()
        return Spend(tokens=int(row[0]), cost_usd=float(row[1]))

    async def recent_tokens(
        self,
        tenant_id: str,
        *,
        window_s: float,
        slack_s: float = 10.0,
        longest_request_s: float = 900.0,
        now: datetime | None = None,
    ) -> RecentTokens:
        """Prompt plus completion tokens of the tenant's requests that finished in the last
        ``window_s`` (rebuilds a lost tokens-per-minute bucket), never fewer. Records are dated
        by arrival: those that arrived within ``window_s + slack_s`` are summed in the database
        (a few that finished just before the window count too: the safe side); an earlier one
        can only have finished within the window if it ran at least ``slack_s``, so only such
        long requests (up to ``longest_request_s``) are read and checked one by one."""
        now = (now or datetime.now(UTC)).astimezone(UTC)
        recent = now - timedelta(seconds=window_s + slack_s)
        finished_after = now - timedelta(seconds=window_s)
        u = UsageRecord
        tokens = u.prompt_tokens + u.completion_tokens
        by_key: dict[str, int] = {}
        total = 0
        async with transaction(self._sessions, "read recent tokens") as session:
            summed = (
                await session.execute(
                    select(u.key_id, func.coalesce(func.sum(tokens), 0))
                    .where(*_filters(tenant_id, recent, None, include_shadow=False))
                    .group_by(u.key_id)
                )
            ).all()
            long_ones = (
                await session.execute(
                    select(u.created_at, u.duration_ms, u.key_id, tokens).where(
                        *_filters(
                            tenant_id,
                            recent - timedelta(seconds=longest_request_s),
                            recent,
                            include_shadow=False,
                        ),
                        u.duration_ms >= slack_s * 1000,
                    )
                )
            ).all()
        rows = [(key_id, int(n)) for key_id, n in summed]
        for created_at, duration_ms, key_id, n in long_ones:
            arrived = created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)
            if arrived + timedelta(milliseconds=duration_ms) >= finished_after:
                rows.append((key_id, int(n)))
        for key_id, n in rows:
            total += n
            if key_id is not None:
                by_key[key_id] = by_key.get(key_id, 0) + n
        return RecentTokens(tenant=total, by_key=by_key)

    async def list_records(
        self,
        tenant_id: str | None,
        since: datetime | None,
        until: datetime | None,
        *,
        limit: int = 100,
        after: str | None = None,
        client_request_id: str | None = None,
    ) -> RecordPage:
        """Raw records oldest first, a page at a time (keyset pagination: stable and cheap
        however deep the page). ``client_request_id``: only the records of requests that
        sent this x-request-id (any number of them: clients may repeat an id)."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequestError(f"limit must be 1 to {MAX_PAGE}.", param="limit")
        u = UsageRecord
        conditions = _filters(tenant_id, since, until, include_shadow=True)
        if client_request_id is not None:
            conditions.append(u.client_request_id == client_request_id)
        if after is not None:
            at, request_id = _decode_cursor(after)
            conditions.append(
                or_(u.created_at > at, and_(u.created_at == at, u.request_id > request_id))
            )
        async with transaction(self._sessions, "list usage records") as session:
            rows = await session.scalars(
                select(u).where(*conditions).order_by(u.created_at, u.request_id).limit(limit + 1)
            )
            events = [_event(row) for row in rows]
        more = len(events) > limit
        events = events[:limit]
        cursor = _encode_cursor(events[-1]) if more else None
        return RecordPage(records=events, next_cursor=cursor)


def _day(session: AsyncSession) -> ColumnElement[Any]:
    created = UsageRecord.created_at
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", created), "YYYY-MM-DD", type_=String)
    # SQLite keeps UTC datetimes as 'YYYY-MM-DD HH:MM:SS.ffffff' text.
    return func.substr(created, 1, 10, type_=String)


def _filters(
    tenant_id: str | None, since: datetime | None, until: datetime | None, *, include_shadow: bool
) -> list[ColumnElement[bool]]:
    u = UsageRecord
    conditions: list[ColumnElement[bool]] = []
    if tenant_id is not None:
        conditions.append(u.tenant_id == tenant_id)
    if since is not None:
        conditions.append(u.created_at >= since)
    if until is not None:
        conditions.append(u.created_at < until)
    if not include_shadow:
        conditions.append(u.kind.in_(CHARGED_KINDS))
    return conditions


def _event(row: UsageRecord) -> UsageEvent:
    values = {name: getattr(row, name) for name in FIELD_NAMES}
    return UsageEvent(**values)


def _encode_cursor(event: UsageEvent) -> str:
    raw = orjson.dumps([event.created_at.isoformat(), event.request_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, request_id = orjson.loads(raw)
        moment = datetime.fromisoformat(at)
        # A NUL would reach PostgreSQL's text comparison and fail there, as a 500.
        if moment.tzinfo is None or not isinstance(request_id, str) or "\x00" in request_id:
            raise ValueError(cursor)
    except (ValueError, TypeError) as exc:
        raise InvalidRequestError(
            "after is not a cursor from a previous page's next_cursor.", param="after"
        ) from exc
    return moment, request_id
