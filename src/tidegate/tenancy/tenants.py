"""Tenants: create, read, list, update and delete, each change audited in its own transaction.

Only the operator creates, changes or deletes tenants; a tenant's admin may read its own tenant
(changing any field would let a tenant raise its own ceiling: see ``_operator_owns``).
Settings are stored as the JSON of :class:`TenantSettings` without its defaults, so a default
can change without a migration. Updates are JSON merge patches (RFC 7396): given fields
replace, nested objects merge, ``null`` resets a field to its default.

Deleting a tenant is refused while it has active keys: revoking them is a separate, deliberate
step that callers can see. Its revoked and expired keys are deleted with it (the audit log
keeps their history); its usage records stay. The system tenant is never deleted.
"""

from __future__ import annotations

import builtins
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.errors import InvalidRequestError, PermissionDeniedError
from tidegate.store.db import transaction
from tidegate.store.models import (
    SYSTEM_TENANT_ID,
    ApiKey,
    Batch,
    BatchLine,
    StoredFile,
    Tenant,
)
from tidegate.store.paging import after_row
from tidegate.tenancy.actors import Actor, visible_tenant
from tidegate.tenancy.audit import record
from tidegate.tenancy.policy import TIERS, TenantSettings, Tier

_UNFINISHED_BATCH = ("validating", "in_progress", "finalizing", "cancelling")

DEFAULT_TIER: Tier = "interactive"
MAX_NAME_LEN = 200


@dataclass(frozen=True, slots=True)
class TenantInfo:
    id: str
    name: str
    tier: Tier
    settings: TenantSettings
    created_at: datetime
    updated_at: datetime


def parse_tier(value: str) -> Tier:
    for tier in TIERS:
        if value == tier:
            return tier
    raise InvalidRequestError(
        f"Unknown tier {value!r}; use one of {', '.join(TIERS)}.", param="tier"
    )


def parse_settings(data: Mapping[str, Any], param: str = "settings") -> TenantSettings:
    """Validate a settings document; errors name the field, e.g. ``settings.limits.x``."""
    try:
        return TenantSettings.model_validate(dict(data))
    except ValidationError as error:
        raise settings_error(error, param) from None


def settings_error(error: ValidationError, param: str) -> InvalidRequestError:
    first = error.errors(include_url=False)[0]
    where = ".".join([param, *(str(part) for part in first["loc"])])
    return InvalidRequestError(f"Invalid value for '{where}': {first['msg']}.", param=where)


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7396: objects merge recursively, null removes, anything else replaces."""
    merged = dict(target)
    for name, value in patch.items():
        if value is None:
            merged.pop(name, None)
        elif isinstance(value, Mapping):
            inner = merged.get(name)
            merged[name] = merge_patch(inner if isinstance(inner, Mapping) else {}, value)
        else:
            merged[name] = value
    return merged


def stored_settings(settings: TenantSettings) -> dict[str, Any]:
    return settings.model_dump(mode="json", exclude_defaults=True)


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME_LEN:
        raise InvalidRequestError(
            f"A tenant needs a name of 1 to {MAX_NAME_LEN} characters.", param="name"
        )
    return name


def _operator_only(actor: Actor, doing: str) -> None:
    if not actor.is_operator:
        raise PermissionDeniedError(
            f"Only the operator (an admin key of the system tenant) may {doing} tenants.",
            code="operator_only",
        )


def _patched_fields(
    name: str | None, tier: str | None, settings: Mapping[str, Any] | None
) -> builtins.list[str]:
    """The dotted paths an update touches: name, tier, settings.limits.requests_per_minute..."""
    fields = [field for field, value in (("name", name), ("tier", tier)) if value is not None]

    def walk(prefix: str, patch: Mapping[str, Any]) -> None:
        for key, value in patch.items():
            if isinstance(value, Mapping) and value:
                walk(f"{prefix}.{key}", value)
            else:
                fields.append(f"{prefix}.{key}")

    walk("settings", settings or {})
    return fields


def _operator_owns(actor: Actor, fields: builtins.list[str]) -> None:
    """Every field of a tenant is the operator's grant: a tenant admin changing any of them
    (its tier, limits, budgets, models, logging, extensions, fields added later) could widen
    what it was given, so none is open to it."""
    if actor.is_operator:
        return
    named = f"'{fields[0]}'" if fields else "its fields"
    raise PermissionDeniedError(
        f"A tenant admin may not change its tenant: {named} is set by the operator (an admin "
        "key of the system tenant), the ceiling for this tenant's keys. Ask the operator, or "
        "narrow a key instead (POST /admin/keys with lower settings).",
        param=fields[0] if fields else None,
        code="operator_only",
    )


class TenantService:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        safety_policies: Collection[str] | None = None,
    ) -> None:
        """``safety_policies``: the names in safety.policies; a tenant may be given only one of
        them (None: not checked)."""
        self._sessions = sessions
        self._safety_policies = None if safety_policies is None else frozenset(safety_policies)

    def _check_safety_policy(self, settings: TenantSettings) -> None:
        known, name = self._safety_policies, settings.safety_policy
        if known is None or name is None or name in known:
            return
        defined = ", ".join(sorted(known)) or "none"
        raise InvalidRequestError(
            f"settings.safety_policy '{name}' is not a policy this gateway defines (defined: "
            f"{defined}). Add it under safety.policies in the gateway's config first (the CLI "
            "reads that config with --config), or pick one of these.",
            param="settings.safety_policy",
            code="unknown_safety_policy",
        )

    async def create(
        self,
        name: str,
        tier: str = DEFAULT_TIER,
        settings: TenantSettings | Mapping[str, Any] | None = None,
        *,
        actor: Actor | None = None,
    ) -> TenantInfo:
        """A new tenant. `actor` None: tidegate itself (an operator)."""
        actor = actor or Actor.internal("service")
        _operator_only(actor, "create")
        name = _check_name(name)
        checked_tier = parse_tier(tier)
        if not isinstance(settings, TenantSettings):
            settings = parse_settings(settings or {})
        self._check_safety_policy(settings)
        now = datetime.now(UTC)
        row = Tenant(
            id="ten_" + secrets.token_hex(12),
            name=name,
            tier=checked_tier,
            settings=stored_settings(settings),
            created_at=now,
            updated_at=now,
        )
        async with transaction(self._sessions, "create a tenant") as session:
            await _ensure_name_free(session, name)
            session.add(row)
            record(
                session,
                actor=actor,
                action="tenant.created",
                tenant_id=row.id,
                target_type="tenant",
                target_id=row.id,
                details={"name": name, "tier": checked_tier, "settings": row.settings},
            )
            await _flush_unique(session, name)
        return _info(row)

    async def get(self, tenant_id: str, *, actor: Actor | None = None) -> TenantInfo:
        async with transaction(self._sessions, "read a tenant") as session:
            return _info(
                await visible_tenant(session, actor or Actor.internal("service"), tenant_id)
            )

    async def list(
        self, *, actor: Actor | None = None, limit: int | None = None, after: str | None = None
    ) -> builtins.list[TenantInfo]:
        """Oldest first; a confined actor sees only its own tenant. `after`: a tenant id from
        the previous page."""
        actor = actor or Actor.internal("service")
        async with transaction(self._sessions, "list tenants") as session:
            query = select(Tenant).order_by(Tenant.created_at, Tenant.id).limit(limit)
            if actor.tenant_id is not None:
                query = query.where(Tenant.id == actor.tenant_id)
            if after is not None:
                last = await session.get(Tenant, after)
                if last is None or not actor.sees(last.id):
                    raise InvalidRequestError(
                        f"Invalid value for 'after': no tenant with id '{after}' in this list.",
                        param="after",
                    )
                query = query.where(
                    after_row(
                        Tenant.created_at,
                        Tenant.id,
                        last_created_at=last.created_at,
                        last_id=last.id,
                    )
                )
            return [_info(row) for row in await session.scalars(query)]

    async def update(
        self,
        tenant_id: str,
        *,
        name: str | None = None,
        tier: str | None = None,
        settings: Mapping[str, Any] | None = None,
        actor: Actor | None = None,
    ) -> TenantInfo:
        """Change the given fields; `settings` is a merge patch over the stored settings."""
        actor = actor or Actor.internal("service")
        async with transaction(self._sessions, "update a tenant") as session:
            row = await visible_tenant(session, actor, tenant_id, for_update=True)
            _operator_owns(actor, _patched_fields(name, tier, settings))
            changes: dict[str, Any] = {}
            if name is not None and _check_name(name) != row.name:
                name = _check_name(name)
                await _ensure_name_free(session, name)
                changes["name"] = {"from": row.name, "to": name}
                row.name = name
            if tier is not None and parse_tier(tier) != row.tier:
                changes["tier"] = {"from": row.tier, "to": tier}
                row.tier = tier
            if settings is not None:
                parsed = parse_settings(merge_patch(row.settings, settings))
                self._check_safety_policy(parsed)
                merged = stored_settings(parsed)
                if merged != row.settings:
                    changes["settings"] = {"from": row.settings, "to": merged}
                    row.settings = merged
            if changes:
                row.updated_at = datetime.now(UTC)
                record(
                    session,
                    actor=actor,
                    action="tenant.updated",
                    tenant_id=row.id,
                    target_type="tenant",
                    target_id=row.id,
                    details=changes,
                )
                await _flush_unique(session, row.name)
            return _info(row)

    async def delete(self, tenant_id: str, *, actor: Actor | None = None) -> TenantInfo:
        """Delete a tenant with no active keys, and its inactive keys."""
        actor = actor or Actor.internal("service")
        now = datetime.now(UTC)
        async with transaction(self._sessions, "delete a tenant") as session:
            row = await visible_tenant(session, actor, tenant_id, for_update=True)
            _operator_only(actor, "delete")
            if row.id == SYSTEM_TENANT_ID:
                raise InvalidRequestError(
                    "The system tenant holds the operator's keys and cannot be deleted.",
                    param="tenant_id",
                    code="system_tenant",
                )
            active = await session.scalar(
                select(func.count())
                .select_from(ApiKey)
                .where(ApiKey.tenant_id == row.id, ApiKey.revoked_at.is_(None))
                .where(or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now))
            )
            if active:
                raise InvalidRequestError(
                    f"Tenant '{row.id}' still has {active} active key(s). Revoke them first "
                    f"(`tidegate keys list --tenant {row.id}`, then `tidegate keys revoke ID`).",
                    param="tenant_id",
                    code="tenant_has_active_keys",
                )
            if await session.scalar(
                select(func.count())
                .select_from(Batch)
                .where(Batch.tenant_id == row.id, Batch.status.in_(_UNFINISHED_BATCH))
            ):
                raise InvalidRequestError(
                    f"Tenant '{row.id}' has batches still running. Cancel them first "
                    "(POST /v1/batches/{id}/cancel with one of its keys, or `tidegate batch "
                    "cancel ID`), then delete the tenant once they are cancelled.",
                    param="tenant_id",
                    code="tenant_has_running_batches",
                )
            info = _info(row)
            # Its finished batches and file records go with it (file contents stay in storage
            # until a storage lifecycle rule removes them).
            batches = select(Batch.id).where(Batch.tenant_id == row.id)
            await session.execute(delete(BatchLine).where(BatchLine.batch_id.in_(batches)))
            await session.execute(delete(Batch).where(Batch.tenant_id == row.id))
            await session.execute(delete(StoredFile).where(StoredFile.tenant_id == row.id))
            await session.execute(delete(ApiKey).where(ApiKey.tenant_id == row.id))
            await session.delete(row)
            record(
                session,
                actor=actor,
                action="tenant.deleted",
                tenant_id=row.id,
                target_type="tenant",
                target_id=row.id,
                details={"name": row.name, "tier": row.tier},
            )
            return info


async def _ensure_name_free(session: AsyncSession, name: str) -> None:
    if await session.scalar(select(Tenant.id).where(Tenant.name == name)) is not None:
        raise _name_taken(name)


async def _flush_unique(session: AsyncSession, name: str) -> None:
    # A concurrent create with the same name loses here instead of failing as a store error.
    try:
        await session.flush()
    except IntegrityError:
        raise _name_taken(name) from None


def _name_taken(name: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"A tenant named {name!r} already exists; choose another name.",
        param="name",
        code="tenant_name_taken",
    )


def _info(row: Tenant) -> TenantInfo:
    return TenantInfo(
        id=row.id,
        name=row.name,
        tier=parse_tier(row.tier),
        settings=TenantSettings.model_validate(row.settings),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
