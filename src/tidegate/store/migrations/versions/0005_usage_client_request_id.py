"""usage_records.client_request_id: the client's x-request-id, kept apart from the key.

The key (request_id) is the gateway's own id from this revision on; rows written before keep
the id they were stored under.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEX = "ix_usage_records_tenant_client_request"


def upgrade() -> None:
    op.add_column(
        "usage_records", sa.Column("client_request_id", sa.String(length=128), nullable=True)
    )
    op.create_index(_INDEX, "usage_records", ["tenant_id", "client_request_id"], unique=False)


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="usage_records")
    # batch mode: SQLite rebuilds the table, PostgreSQL drops the column in place.
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("client_request_id")
