"""The audit log: who did what to which object, and when.

Services call :func:`record` with the session of the transaction that makes the change, so an
action and its audit row commit together or not at all. Details describe the change (names,
roles, settings, expiry); they never hold a key, a key prefix or a hash.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.store.db import transaction
from tidegate.store.models import SYSTEM_TENANT_ID, AuditEvent
from tidegate.tenancy.actors import Actor, tenant_not_found

Action = Literal[
    "tenant.created",
    "tenant.updated",
    "tenant.deleted",
    "key.created",
    "key.revoked",
    "version.registered",
    "traffic.split_changed",
    "traffic.shadow_changed",
    "traffic.rolled_back",
    "rollout.started",
    "rollout.advanced",
    "rollout.paused",
    "rollout.resumed",
    "rollout.rolled_back",
    "rollout.aborted",
    "rollout.promoted",
    "adapter.added",
    "adapter.removed",
    "pool.scale",
]
TargetType = Literal["tenant", "api_key", "model", "rollout", "adapter", "pool"]
AUTOSCALER = Actor.internal("autoscaler")
"""The actor of the scale events local pools' autoscalers record."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    actor_key_id: str | None
    tenant_id: str | None
    action: str
    target_type: str
    target_id: str
    details: dict[str, Any]


def record(
    session: AsyncSession,
    *,
    actor: Actor,
    action: Action,
    tenant_id: str,
    target_type: TargetType,
    target_id: str,
    details: dict[str, Any],
) -> None:
    """Add the audit row to the caller's transaction."""
    session.add(
        AuditEvent(
            at=datetime.now(UTC),
            actor_key_id=actor.key_id,
            actor=actor.name,
            tenant_id=tenant_id,
            action=action,
            target_type=target_type,
            target_id=target_id,
            details=details,
        )
    )


class AuditLog:
    """Reads the audit log, scoped to what the reader may see."""

    def __init__(self, *, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def list(
        self,
        *,
        actor: Actor,
        tenant_id: str | None = None,
        limit: int = 100,
        after: int | None = None,
    ) -> list[AuditEntry]:
        """Newest first. A confined actor sees only its tenant's events; `tenant_id` narrows
        the operator's view, even to a deleted tenant; another tenant is NotFoundError for a
        confined actor. `after`: the last event id of the previous page."""
        async with transaction(self._sessions, "read the audit log") as session:
            query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
            if tenant_id is not None:
                # No existence check: the operator reads the history of deleted tenants too.
                if not actor.sees(tenant_id):
                    raise tenant_not_found(tenant_id)
                query = query.where(AuditEvent.tenant_id == tenant_id)
            elif actor.tenant_id is not None:
                query = query.where(AuditEvent.tenant_id == actor.tenant_id)
            if after is not None:
                query = query.where(AuditEvent.id < after)
            return [_entry(row) for row in await session.scalars(query)]

    async def pool_scaled(self, pool: str, details: dict[str, Any]) -> None:
        """Record a local pool's scale event (the autoscaler acts on its own: no key, the
        system tenant), in a transaction of its own."""
        async with transaction(self._sessions, "audit a scale event") as session:
            record(
                session,
                actor=AUTOSCALER,
                action="pool.scale",
                tenant_id=SYSTEM_TENANT_ID,
                target_type="pool",
                target_id=pool,
                details=details,
            )


def _entry(row: AuditEvent) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        at=row.at,
        actor=row.actor,
        actor_key_id=row.actor_key_id,
        tenant_id=row.tenant_id,
        action=row.action,
        target_type=row.target_type,
        target_id=row.target_id,
        details=row.details,
    )
