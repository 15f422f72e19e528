"""Tenancy for the app's lifespan: the key service (with its admin key) and the tenant service."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.config import Config
from tidegate.tenancy.audit import AuditLog
from tidegate.tenancy.keys import KeyService
from tidegate.tenancy.tenants import TenantService


@dataclass(frozen=True, slots=True)
class Tenancy:
    keys: KeyService
    tenants: TenantService
    audit: AuditLog


async def wire_tenancy(
    config: Config,
    sessions: async_sessionmaker[AsyncSession],
    *,
    announce_admin_key: Callable[[str | None], None] | None,
) -> Tenancy:
    """Makes sure an admin key exists; a generated one is announced once (None: it was
    generated at an earlier start)."""
    keys = KeyService(
        sessions=sessions,
        cache_ttl_s=config.store.key_cache_ttl_s,
        outage_s=config.store.key_cache_outage_s,
    )
    generated = await keys.ensure_admin_key(config.admin_key)
    if config.admin_key is None and announce_admin_key is not None:
        announce_admin_key(generated)
    return Tenancy(
        keys=keys,
        tenants=TenantService(sessions=sessions, safety_policies=config.safety.policies.keys()),
        audit=AuditLog(sessions=sessions),
    )
