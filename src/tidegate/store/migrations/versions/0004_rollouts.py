"""model_versions, traffic_policies, rollouts, rollout_step_stats, shadow_comparisons, leases.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _at(name: str, nullable: bool = True) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("pool", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=1000), nullable=False),
        sa.Column("revision", sa.String(length=200), nullable=False),
        sa.Column("profile_hash", sa.String(length=64), nullable=False),
        _at("created_at", nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
    )
    op.create_index("ix_model_versions_model_created", "model_versions", ["model", "created_at"])
    op.create_table(
        "traffic_policies",
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("stable_pool", sa.String(length=200), nullable=False),
        sa.Column("weights", sa.JSON(), nullable=False),
        sa.Column("sticky_by", sa.String(length=16), nullable=False),
        sa.Column("shadow_pool", sa.String(length=200), nullable=True),
        sa.Column("shadow_sample", sa.Float(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        _at("updated_at", nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("model", name=op.f("pk_traffic_policies")),
    )
    op.create_table(
        "rollouts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("stable_pool", sa.String(length=200), nullable=False),
        sa.Column("candidate_pool", sa.String(length=200), nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("hold_s", sa.Float(), nullable=False),
        sa.Column("gates", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        _at("step_started_at", nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("history", sa.JSON(), nullable=False),
        _at("created_at", nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        _at("updated_at", nullable=False),
        _at("finished_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollouts")),
    )
    op.create_index("ix_rollouts_model_state", "rollouts", ["model", "state"])
    op.create_table(
        "rollout_step_stats",
        sa.Column("rollout_id", sa.String(length=32), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("pool", sa.String(length=200), nullable=False),
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("json_requests", sa.Integer(), nullable=False),
        sa.Column("json_valid", sa.Integer(), nullable=False),
        sa.Column("histograms", sa.JSON(), nullable=False),
        _at("updated_at", nullable=False),
        sa.PrimaryKeyConstraint(
            "rollout_id", "step_index", "pool", "gateway_id", name=op.f("pk_rollout_step_stats")
        ),
    )
    op.create_table(
        "shadow_comparisons",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("primary_pool", sa.String(length=200), nullable=False),
        sa.Column("shadow_pool", sa.String(length=200), nullable=False),
        _at("created_at", nullable=False),
        sa.Column("primary", sa.JSON(), nullable=False),
        sa.Column("shadow", sa.JSON(), nullable=False),
        sa.Column("outputs_differ", sa.Boolean(), nullable=True),
        sa.Column("similarity", sa.Float(), nullable=True),
        _at("expires_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shadow_comparisons")),
    )
    op.create_index(
        "ix_shadow_comparisons_model_created", "shadow_comparisons", ["model", "created_at"]
    )
    op.create_index(op.f("ix_shadow_comparisons_expires_at"), "shadow_comparisons", ["expires_at"])
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=False),
        _at("expires_at", nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_index(op.f("ix_shadow_comparisons_expires_at"), table_name="shadow_comparisons")
    op.drop_index("ix_shadow_comparisons_model_created", table_name="shadow_comparisons")
    op.drop_table("shadow_comparisons")
    op.drop_table("rollout_step_stats")
    op.drop_index("ix_rollouts_model_state", table_name="rollouts")
    op.drop_table("rollouts")
    op.drop_table("traffic_policies")
    op.drop_index("ix_model_versions_model_created", table_name="model_versions")
    op.drop_table("model_versions")
