"""The ORM models. One declarative base; later tables (tenants, usage, batches) join it here.

Every schema change also needs a migration in ``migrations/versions`` (``alembic revision
--autogenerate`` against this metadata, see ``migrations/alembic.ini``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tidegate.store.types import UTCDateTime

# Deterministic constraint names, so later migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


SYSTEM_TENANT_ID = "ten_system"
"""The operator's tenant. Admin keys of this tenant manage every tenant; the bootstrap admin key
belongs to it."""


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ApiKey(Base):
    """An API key. Only its SHA-256 hash is stored; the plaintext is shown once at creation."""

    __tablename__ = "api_keys"
    __table_args__ = (CheckConstraint("role IN ('admin', 'member')", name="role"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    key_prefix: Mapped[str] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    tenant_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("tenants.id"), index=True, default=SYSTEM_TENANT_ID
    )
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Per-key overrides (limits, allowed models, priority): validated by the gateway's schema."""


class Tenant(Base):
    """A team or product using the gateway. Its policy lives in ``settings`` (a JSON document
    validated by the gateway's schema), so adding a knob needs no migration."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    tier: Mapped[str] = mapped_column(String(32))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AuditEvent(Base):
    """One administrative action: who did what to which object, and when."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_tenant_at", "tenant_id", "at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor_key_id: Mapped[str | None] = mapped_column(String(32))
    """None for actions taken through the CLI directly against the store."""
    actor: Mapped[str] = mapped_column(String(200))
    tenant_id: Mapped[str | None] = mapped_column(String(32))
    """The tenant whose object changed."""
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class UsageRecord(Base):
    """Exactly one row per request: the key is the gateway's own request id (never the
    client's), so write-ahead replays are idempotent and no client can merge two requests."""

    __tablename__ = "usage_records"
    __table_args__ = (
        Index("ix_usage_records_tenant_created", "tenant_id", "created_at"),
        Index("ix_usage_records_tenant_client_request", "tenant_id", "client_request_id"),
    )

    request_id: Mapped[str] = mapped_column(String(140), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    tenant_id: Mapped[str] = mapped_column(String(32))
    key_id: Mapped[str | None] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(200))
    replica: Mapped[str | None] = mapped_column(String(64))
    route: Mapped[str] = mapped_column(String(32))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    duration_ms: Mapped[float] = mapped_column(Float)
    status: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16), default="live")
    """live, batch or shadow (shadow usage is never charged to the tenant)."""
    client_request_id: Mapped[str | None] = mapped_column(String(128))
    """The client's x-request-id (correlation only; not unique)."""
    pool: Mapped[str | None] = mapped_column(String(200))
    """The pool that served the request."""
    route_reason: Mapped[str | None] = mapped_column(String(64))
    """Why that pool served it (``routing.rules``: default, rule:<i>, time_window:<i> ...)."""


class PromptLog(Base):
    """Redacted prompt and completion text, kept only for tenants that opt in, purged after
    the tenant's retention window."""

    __tablename__ = "prompt_logs"

    request_id: Mapped[str] = mapped_column(String(140), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    tenant_id: Mapped[str] = mapped_column(String(32), index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    prompt: Mapped[str] = mapped_column(Text)
    completion: Mapped[str] = mapped_column(Text)


class StoredFile(Base):
    """An uploaded file (OpenAI Files API) or a batch's output/error file. The bytes live in the
    file storage (a local directory or S3) under ``storage_key``; this row is the index."""

    __tablename__ = "files"
    __table_args__ = (Index("ix_files_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(32), ForeignKey("tenants.id"))
    purpose: Mapped[str] = mapped_column(String(32))
    """batch (uploaded input), batch_output (written by tidegate)."""
    filename: Mapped[str] = mapped_column(String(255))
    bytes: Mapped[int] = mapped_column(BigInteger)
    line_count: Mapped[int] = mapped_column(Integer, default=0)
    storage_key: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Batch(Base):
    """One OpenAI batch. ``status`` follows the OpenAI lifecycle; ``lease_*`` says which gateway
    process is validating or finalizing it (a lease that runs out is taken over)."""

    __tablename__ = "batches"
    __table_args__ = (
        Index("ix_batches_tenant_created", "tenant_id", "created_at"),
        Index("ix_batches_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(32), ForeignKey("tenants.id"))
    key_id: Mapped[str] = mapped_column(String(32))
    """The key that created it; its lines run as that key (its limits and allowed models)."""
    endpoint: Mapped[str] = mapped_column(String(64))
    input_file_id: Mapped[str] = mapped_column(String(64))
    completion_window: Mapped[str] = mapped_column(String(16))
    batch_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    status: Mapped[str] = mapped_column(String(16))
    errors: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    """Validation errors (line numbers and messages) when it failed validation."""
    total: Mapped[int] = mapped_column(Integer, default=0)
    completed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    output_file_id: Mapped[str | None] = mapped_column(String(64))
    error_file_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    in_progress_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finalizing_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancelling_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class BatchLine(Base):
    """One request of a batch. Executed at least once (claimed under an expiring lease); its
    result is committed once (``state`` pending → done only), so every ``custom_id`` ends up
    in exactly one of the output and error files."""

    __tablename__ = "batch_lines"
    __table_args__ = (
        Index("uq_batch_lines_custom_id", "batch_id", "custom_id", unique=True),
        Index("ix_batch_lines_claim", "batch_id", "state", "lease_expires_at"),
    )

    batch_id: Mapped[str] = mapped_column(String(64), ForeignKey("batches.id"), primary_key=True)
    line_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    """1-based line number in the input file."""
    custom_id: Mapped[str] = mapped_column(String(512))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    """pending or done."""
    outcome: Mapped[str | None] = mapped_column(String(16))
    """Once done: succeeded, failed, expired or cancelled."""
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """The output line's `response` (succeeded) or `error` (otherwise) object."""
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ModelVersion(Base):
    """What one pool serves for a public model name: recorded when a pool first serves a new
    model, revision or engine profile, or registered through the admin API or CLI."""

    __tablename__ = "model_versions"
    __table_args__ = (Index("ix_model_versions_model_created", "model", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model: Mapped[str] = mapped_column(String(200))
    """The public model name."""
    pool: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(1000))
    """The model id or path the pool's engines load."""
    revision: Mapped[str] = mapped_column(String(200))
    """A revision or checksum of the weights."""
    profile_hash: Mapped[str] = mapped_column(String(64))
    """A hash of the engine profile (empty for remote pools)."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(200))


class TrafficPolicy(Base):
    """How a public model name's traffic is divided now: the weighted split between pools (sticky
    by session or tenant) and the shadow pool mirrored requests go to. Every gateway re-reads it
    every rollouts.sync_interval_s."""

    __tablename__ = "traffic_policies"

    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    stable_pool: Mapped[str] = mapped_column(String(200))
    """Where the whole traffic goes after a rollback."""
    weights: Mapped[list[list[Any]]] = mapped_column(JSON, default=list)
    """[[pool, weight], ...] in order: the first pools take the low end of the hash space, so
    growing the first pool's weight only moves sessions onto it. Empty: no split."""
    sticky_by: Mapped[str] = mapped_column(String(16), default="session")
    """session (x-tidegate-session-id, else the conversation's opening messages, else the
    tenant) or tenant."""
    shadow_pool: Mapped[str | None] = mapped_column(String(200))
    shadow_sample: Mapped[float] = mapped_column(Float, default=0.0)
    """The share of requests mirrored to shadow_pool (0 to 1)."""
    revision: Mapped[int] = mapped_column(Integer, default=1)
    """Incremented on every change, so gateways apply only what changed."""
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_by: Mapped[str] = mapped_column(String(200))


class Rollout(Base):
    """A staged rollout of a candidate pool: its steps, gates and where it stands. Transitions
    are conditional updates on ``state``, so the controller and operators never race."""

    __tablename__ = "rollouts"
    __table_args__ = (Index("ix_rollouts_model_state", "model", "state"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model: Mapped[str] = mapped_column(String(200))
    stable_pool: Mapped[str] = mapped_column(String(200))
    candidate_pool: Mapped[str] = mapped_column(String(200))
    steps: Mapped[list[float]] = mapped_column(JSON)
    """Candidate traffic shares in percent, for example [5, 25, 100]."""
    hold_s: Mapped[float] = mapped_column(Float)
    gates: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))
    """running, paused, promoted, rolled_back or aborted."""
    step_index: Mapped[int] = mapped_column(Integer, default=0)
    step_started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    reason: Mapped[str | None] = mapped_column(Text)
    """Why it ended (the failed gate, or who aborted it)."""
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    """Each transition: at, from, to, step, share, reason, and the step's gate figures."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class RolloutStepStats(Base):
    """One gateway's running totals for one pool during one rollout step; the controller adds
    up the rows of all gateways."""

    __tablename__ = "rollout_step_stats"

    rollout_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    step_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    pool: Mapped[str] = mapped_column(String(200), primary_key=True)
    gateway_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    json_requests: Mapped[int] = mapped_column(Integer, default=0)
    json_valid: Mapped[int] = mapped_column(Integer, default=0)
    histograms: Mapped[dict[str, list[int]]] = mapped_column(JSON, default=dict)
    """ttft, itl and e2e: counts per fixed latency bucket (rollout.stats.BUCKETS_S)."""
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ShadowComparison(Base):
    """One mirrored request: the primary's and the shadow's answers side by side. Texts are
    kept only when the tenant logs prompts, redacted."""

    __tablename__ = "shadow_comparisons"
    __table_args__ = (Index("ix_shadow_comparisons_model_created", "model", "created_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200))
    tenant_id: Mapped[str] = mapped_column(String(32))
    primary_pool: Mapped[str] = mapped_column(String(200))
    shadow_pool: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    primary: Mapped[dict[str, Any]] = mapped_column(JSON)
    """ttft_ms, itl_ms, e2e_ms, error, prompt_tokens, completion_tokens, finish_reason,
    json_valid, tool_calls_ok, refusal (and text, when kept)."""
    shadow: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The same fields for the shadow's answer."""
    outputs_differ: Mapped[bool | None] = mapped_column(Boolean)
    """The two texts differ (None when either side failed)."""
    similarity: Mapped[float | None] = mapped_column(Float)
    """Text similarity 0..1 (difflib ratio)."""
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    """When the purge job deletes it: after the tenant's prompt retention when texts are kept,
    else after rollouts.shadow_retention_days."""


class Lease(Base):
    """A named lock held by one gateway process until ``expires_at`` (renewed while alive)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class LoraAdapter(Base):
    """A LoRA adapter version added at runtime (admin API or CLI): every gateway serves it on
    its base pool's replicas, loading it into each engine. Configured adapters are not here."""

    __tablename__ = "lora_adapters"

    target: Mapped[str] = mapped_column(String(200), primary_key=True)
    """The version's pool and vLLM LoRA name: name, or name@version."""
    name: Mapped[str] = mapped_column(String(200))
    """The public model name."""
    version: Mapped[str] = mapped_column(String(32))
    pool: Mapped[str] = mapped_column(String(200))
    """The base pool whose replicas serve it."""
    source: Mapped[str] = mapped_column(String(1000))
    """The adapter directory or hub id, as the engines see it."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(200))
