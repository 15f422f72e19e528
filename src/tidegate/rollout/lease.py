"""A named lease in the store (``leases`` table): at most one gateway process holds it at a
time, until it stops renewing it and ``expires_at`` passes.

Acquiring is renewing: one conditional UPDATE takes the row when this holder already has it or
it has expired; when there is no row yet, an INSERT ... ON CONFLICT DO NOTHING creates it, so
two processes starting at once cannot both win. Times are each process's wall clock: keep the
TTL well above the clock skew between gateway hosts.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.store.db import transaction
from tidegate.store.models import Lease


async def acquire(
    sessions: async_sessionmaker[AsyncSession], name: str, *, holder: str, ttl_s: float
) -> bool:
    """Take or renew the lease for ``ttl_s``; False when another live holder has it."""
    now = datetime.now(UTC)
    expires = now + timedelta(seconds=ttl_s)
    async with transaction(sessions, f"take the lease {name}") as session:
        result = await session.execute(
            update(Lease)
            .where(Lease.name == name, or_(Lease.holder == holder, Lease.expires_at < now))
            .values(holder=holder, expires_at=expires)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount:  # type: ignore[attr-defined]
            return True
        insert = postgresql.insert if _dialect(session) == "postgresql" else sqlite.insert
        created = await session.execute(
            insert(Lease)
            .values(name=name, holder=holder, expires_at=expires)
            .on_conflict_do_nothing(index_elements=[Lease.name])
        )
        return bool(created.rowcount)  # type: ignore[attr-defined]


async def release(sessions: async_sessionmaker[AsyncSession], name: str, *, holder: str) -> None:
    """Give the lease up (if this holder has it), so another process takes over at once."""
    async with transaction(sessions, f"release the lease {name}") as session:
        await session.execute(
            delete(Lease)
            .where(Lease.name == name, Lease.holder == holder)
            .execution_options(synchronize_session=False)
        )


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name
