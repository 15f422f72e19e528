"""Keyset pagination: "the rows after this one" in (created_at, id) order, stable under inserts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, and_, or_
from sqlalchemy.orm import InstrumentedAttribute


def after_row(
    created_at: InstrumentedAttribute[datetime],
    row_id: InstrumentedAttribute[str],
    *,
    last_created_at: datetime,
    last_id: str,
) -> ColumnElement[bool]:
    """The WHERE clause for rows ordered by (created_at, id) that come after the given row."""
    return or_(
        created_at > last_created_at,
        and_(created_at == last_created_at, row_id > last_id),
    )
