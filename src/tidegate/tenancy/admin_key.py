"""The bootstrap admin key: make sure an operator can always get in.

Runs at every gateway start. The key belongs to the system tenant, so it is an operator key;
its creation is audited like any other (actor ``tidegate:startup``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import SecretStr
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.errors import InvalidRequestError
from tidegate.store.db import lock, transaction
from tidegate.store.models import SYSTEM_TENANT_ID, ApiKey
from tidegate.tenancy.actors import Actor
from tidegate.tenancy.audit import record
from tidegate.tenancy.key_records import audit_details, generate_key, hash_key, key_info, new_row

MIN_CONFIGURED_KEY_LEN = 16


async def ensure_admin_key(
    sessions: async_sessionmaker[AsyncSession], configured: SecretStr | None
) -> str | None:
    """Make sure an admin can get in; returns a newly generated admin key, else None.

    With a configured key, its hash is stored as an admin key if missing (nothing is
    returned: the operator already knows it). Without one, a key is generated only when no
    active admin key exists; the caller prints it once.
    """
    now = datetime.now(UTC)
    async with transaction(sessions, "set up the admin key") as session:
        await lock(session, "admin-key")  # two processes starting at once create one key
        if configured is not None:
            await _ensure_configured(session, configured.get_secret_value(), now)
            return None
        active_admin = await session.scalar(
            select(ApiKey.id)
            .where(ApiKey.tenant_id == SYSTEM_TENANT_ID)  # a tenant's admin is no operator
            .where(ApiKey.role == "admin", ApiKey.revoked_at.is_(None))
            .where(or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now))
            .limit(1)
        )
        if active_admin is not None:
            return None
        plaintext = generate_key()
        _add_bootstrap_key(
            session, new_row(plaintext, name="admin (generated)", role="admin", now=now)
        )
        return plaintext


async def _ensure_configured(session: AsyncSession, plaintext: str, now: datetime) -> None:
    if len(plaintext) < MIN_CONFIGURED_KEY_LEN:
        raise InvalidRequestError(
            f"admin_key must be at least {MIN_CONFIGURED_KEY_LEN} characters long; leave it "
            "unset and tidegate generates a strong one at first start.",
            param="admin_key",
        )
    row = await session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(plaintext)))
    if row is None:
        _add_bootstrap_key(
            session, new_row(plaintext, name="admin (from config)", role="admin", now=now)
        )
        return
    info = key_info(row)
    if info.role != "admin" or info.status(now) != "active" or info.tenant_id != SYSTEM_TENANT_ID:
        # Re-enabling or moving it silently would undo an operator's decision.
        if info.tenant_id != SYSTEM_TENANT_ID:
            state = f"a key of tenant {info.tenant_id}"
        else:
            state = "a member key" if info.role != "admin" else info.status(now)
        raise InvalidRequestError(
            f"The configured admin_key is stored as key {info.id}, which is {state}. "
            "Configure a different admin_key, or unset it to have one generated.",
            param="admin_key",
        )


def _add_bootstrap_key(session: AsyncSession, row: ApiKey) -> None:
    session.add(row)
    record(
        session,
        actor=Actor.internal("startup"),
        action="key.created",
        tenant_id=row.tenant_id,
        target_type="api_key",
        target_id=row.id,
        details=audit_details(row),
    )
