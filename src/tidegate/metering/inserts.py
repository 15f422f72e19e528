"""Idempotent bulk inserts: rows whose primary key is already stored are skipped.

Both dialects spell it ``INSERT ... ON CONFLICT (pk) DO NOTHING``; SQLAlchemy batches the rows
into multi-row statements ("insertmanyvalues"), so a batch of hundreds is a few round trips.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.store.db import transaction
from tidegate.store.models import Base


async def insert_new(
    sessions: async_sessionmaker[AsyncSession],
    model: type[Base],
    rows: Sequence[dict[str, Any]],
    *,
    key: str,
    action: str,
) -> None:
    """Insert `rows` into `model`'s table in one transaction, skipping those whose `key`
    column is already present (replays and duplicates within `rows` included)."""
    if not rows:
        return
    table = model.metadata.tables[model.__tablename__]  # the Core table behind the model
    async with transaction(sessions, action) as session:
        dialect = session.get_bind().dialect.name
        if dialect == "postgresql":
            statement: Any = postgresql.insert(table).on_conflict_do_nothing(index_elements=[key])
        elif dialect == "sqlite":
            statement = sqlite.insert(table).on_conflict_do_nothing(index_elements=[key])
        else:  # the store supports these two only; fail loudly rather than double count
            raise NotImplementedError(f"no idempotent insert for the {dialect} dialect")
        # A Core insert on the connection: half the CPU of the ORM bulk path per row.
        connection = await session.connection()
        await connection.execute(statement, list(rows))
