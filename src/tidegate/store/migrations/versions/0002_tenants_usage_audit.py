"""tenants, api_keys.tenant_id/settings, audit_log, usage_records, prompt_logs.

Existing keys move to the operator's tenant (``ten_system``), which this revision creates.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SYSTEM_TENANT_ID = "ten_system"


def upgrade() -> None:
    tenants = op.create_table(
        "tenants",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("tier", sa.String(length=32), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
        sa.UniqueConstraint("name", name=op.f("uq_tenants_name")),
    )
    now = datetime.now(UTC)
    op.bulk_insert(
        tenants,
        [
            {
                "id": SYSTEM_TENANT_ID,
                "name": "system",
                "tier": "internal",
                "settings": {},
                "created_at": now,
                "updated_at": now,
            }
        ],
    )
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(
            sa.Column(
                "tenant_id",
                sa.String(length=32),
                nullable=False,
                server_default=SYSTEM_TENANT_ID,
            )
        )
        batch.add_column(sa.Column("settings", sa.JSON(), nullable=False, server_default="{}"))
        batch.create_foreign_key(
            op.f("fk_api_keys_tenant_id_tenants"), "tenants", ["tenant_id"], ["id"]
        )
        batch.create_index(op.f("ix_api_keys_tenant_id"), ["tenant_id"])

    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_key_id", sa.String(length=32), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target_type", sa.String(length=32), nullable=False),
        sa.Column("target_id", sa.String(length=64), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_tenant_at", "audit_log", ["tenant_id", "at"])

    op.create_table(
        "usage_records",
        sa.Column("request_id", sa.String(length=140), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("replica", sa.String(length=64), nullable=True),
        sa.Column("route", sa.String(length=32), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("cached_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("ttft_ms", sa.Float(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_usage_records")),
    )
    op.create_index(op.f("ix_usage_records_created_at"), "usage_records", ["created_at"])
    op.create_index("ix_usage_records_tenant_created", "usage_records", ["tenant_id", "created_at"])

    op.create_table(
        "prompt_logs",
        sa.Column("request_id", sa.String(length=140), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("completion", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_prompt_logs")),
    )
    op.create_index(op.f("ix_prompt_logs_created_at"), "prompt_logs", ["created_at"])
    op.create_index(op.f("ix_prompt_logs_tenant_id"), "prompt_logs", ["tenant_id"])
    op.create_index(op.f("ix_prompt_logs_expires_at"), "prompt_logs", ["expires_at"])


def downgrade() -> None:
    op.drop_table("prompt_logs")
    op.drop_table("usage_records")
    op.drop_table("audit_log")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_index(op.f("ix_api_keys_tenant_id"))
        batch.drop_constraint(op.f("fk_api_keys_tenant_id_tenants"), type_="foreignkey")
        batch.drop_column("settings")
        batch.drop_column("tenant_id")
    op.drop_table("tenants")
