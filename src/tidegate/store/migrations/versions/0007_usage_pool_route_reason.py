"""usage_records.pool and route_reason: which pool served each request and why (issue 19).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("usage_records", sa.Column("pool", sa.String(length=200), nullable=True))
    op.add_column("usage_records", sa.Column("route_reason", sa.String(length=64), nullable=True))


def downgrade() -> None:
    # batch mode: SQLite rebuilds the table, PostgreSQL drops the columns in place.
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("route_reason")
        batch.drop_column("pool")
