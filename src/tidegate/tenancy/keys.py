"""API keys: creation, listing, revocation and the per-request authentication check.

A verified key is cached in-process for ``cache_ttl_s`` together with its tenant (one join at
lookup), so the hot path costs one hash and one dict lookup. A revocation or tenant change made
anywhere (another gateway replica, the CLI) therefore takes effect within the TTL. While the
store is unreachable, a key verified within ``outage_s`` past its TTL still authenticates;
an unknown key gets 503 service_unavailable. A refused key
is remembered for ``key_cache.REFUSED_TTL_S`` (2 s), so repeating a bad key does not query the
store on every request. Plaintext keys never appear in logs, audit rows or error messages.

Every change is audited in the transaction that makes it; scoping follows
:mod:`tidegate.tenancy.actors` (a key of a tenant the actor cannot see is answered like a
missing one), and a tenant admin's new keys stay within its own grant
(:mod:`tidegate.tenancy.key_grants`).
"""

from __future__ import annotations

import asyncio
import builtins
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.errors import (
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
)
from tidegate.store.db import transaction
from tidegate.store.errors import StoreUnavailableError
from tidegate.store.models import SYSTEM_TENANT_ID, ApiKey, Tenant
from tidegate.store.paging import after_row
from tidegate.tenancy.actors import Actor, visible_tenant
from tidegate.tenancy.admin_key import ensure_admin_key
from tidegate.tenancy.audit import record
from tidegate.tenancy.key_cache import REFUSED_TTL_S, PrincipalCache, RefusedKeys
from tidegate.tenancy.key_grants import Grant, check_within_grant
from tidegate.tenancy.key_records import (
    ApiKeyInfo,
    KeyStatus,
    audit_details,
    generate_key,
    hash_key,
    key_info,
    new_row,
    parse_key_settings,
    parse_role,
)
from tidegate.tenancy.policy import ROLES, KeySettings, Role, TenantSettings
from tidegate.tenancy.principal import Principal
from tidegate.tenancy.tenants import parse_tier

__all__ = [
    "ROLES",
    "ApiKeyInfo",
    "KeyService",
    "KeyStatus",
    "Principal",
    "Role",
    "generate_key",
    "hash_key",
]

MAX_NAME_LEN = 200
_HOW_TO_GET_A_KEY = (
    "Send it as `Authorization: Bearer <key>`; an administrator can create one with "
    "`tidegate keys create --name NAME`."
)


class KeyService:
    """Keys in the store, plus the cached verification the request path calls."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        cache_ttl_s: float,
        cache_max_entries: int = 10_000,
        refused_ttl_s: float = REFUSED_TTL_S,
        outage_s: float = 0.0,
    ) -> None:
        """``refused_ttl_s``: how long a refused key is refused without asking the store.
        ``outage_s``: how long past the TTL a verified key still authenticates while the store
        is unreachable."""
        self._sessions = sessions
        self._cache = PrincipalCache(
            ttl_s=cache_ttl_s, max_entries=cache_max_entries, outage_s=outage_s
        )
        self._refused = RefusedKeys(ttl_s=refused_ttl_s)
        # One store lookup per uncached key, however many requests carry it at once.
        self._inflight: dict[str, asyncio.Future[Principal]] = {}

    @property
    def cache_size(self) -> int:
        """How many verified keys are cached now (bounded by cache_max_entries)."""
        return len(self._cache)

    async def authenticate(self, plaintext: str) -> Principal:
        """The principal for a bearer key; AuthenticationError if unknown, revoked or expired."""
        if not plaintext:
            raise AuthenticationError(
                f"You didn't provide an API key. {_HOW_TO_GET_A_KEY}", code="missing_api_key"
            )
        key_hash = hash_key(plaintext)
        cached = self._cache.get(key_hash)
        if cached is not None:
            return cached
        self._refused.check(key_hash)
        pending = self._inflight.get(key_hash)
        if pending is None:
            pending = asyncio.ensure_future(self._verify(key_hash))
            self._inflight[key_hash] = pending
            pending.add_done_callback(lambda done: self._settle(key_hash, done))
        # shield: a caller that goes away must not cancel the lookup others are waiting on.
        return await asyncio.shield(pending)

    def forget_tenant(self, tenant_id: str) -> None:
        """Drop the cached principals of a tenant, so a change to it applies here at once
        (other processes see it within the TTL)."""
        self._cache.forget_tenant(tenant_id)

    async def create(
        self,
        name: str,
        role: str,
        tenant_id: str = SYSTEM_TENANT_ID,
        expires_at: datetime | None = None,
        settings: KeySettings | Mapping[str, Any] | None = None,
        *,
        actor: Actor | None = None,
    ) -> tuple[ApiKeyInfo, str]:
        """Store a new key; returns its info and the plaintext, which is not kept anywhere.

        `actor` None: tidegate itself (an operator). A tenant the actor cannot see is
        NotFoundError, like a missing one."""
        actor = actor or Actor.internal("service")
        name = name.strip()
        if not name or len(name) > MAX_NAME_LEN:
            raise InvalidRequestError(
                f"A key needs a name of 1 to {MAX_NAME_LEN} characters.", param="name"
            )
        checked_role = parse_role(role)
        checked_settings = parse_key_settings(settings)
        now = datetime.now(UTC)
        if expires_at is not None and (expires_at.tzinfo is None or expires_at <= now):
            raise InvalidRequestError(
                "expires_at must be a time zone aware time in the future.", param="expires_at"
            )
        plaintext = generate_key()
        # A fresh random key cannot have been refused, but this keeps "a key works as soon as
        # it is created here" true whatever generate_key does.
        self._refused.forget(hash_key(plaintext))
        row = new_row(
            plaintext,
            name=name,
            role=checked_role,
            now=now,
            tenant_id=tenant_id,
            expires_at=expires_at,
            settings=checked_settings,
        )
        async with transaction(self._sessions, "create an API key") as session:
            # Locks the tenant row, so a concurrent delete of the tenant cannot orphan the key.
            tenant = await visible_tenant(session, actor, tenant_id, for_update=True)
            if not actor.is_operator:
                check_within_grant(
                    await _grant(session, actor, tenant), checked_settings, expires_at
                )
            session.add(row)
            record(
                session,
                actor=actor,
                action="key.created",
                tenant_id=tenant_id,
                target_type="api_key",
                target_id=row.id,
                details=audit_details(row),
            )
        return key_info(row), plaintext

    async def list(
        self,
        *,
        tenant_id: str | None = None,
        actor: Actor | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> builtins.list[ApiKeyInfo]:
        """Keys oldest first, revoked and expired ones included: of `tenant_id`, else of every
        tenant the actor sees. `after`: a key id from the previous page."""
        actor = actor or Actor.internal("service")
        async with transaction(self._sessions, "list API keys") as session:
            query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id).limit(limit)
            if tenant_id is not None:
                await visible_tenant(session, actor, tenant_id)
                query = query.where(ApiKey.tenant_id == tenant_id)
            elif actor.tenant_id is not None:
                query = query.where(ApiKey.tenant_id == actor.tenant_id)
            if after is not None:
                last = await session.get(ApiKey, after)
                if last is None or not actor.sees(last.tenant_id):
                    raise InvalidRequestError(
                        f"Invalid value for 'after': no API key with id '{after}' in this list.",
                        param="after",
                    )
                query = query.where(
                    after_row(
                        ApiKey.created_at,
                        ApiKey.id,
                        last_created_at=last.created_at,
                        last_id=last.id,
                    )
                )
            return [key_info(row) for row in await session.scalars(query)]

    async def get(self, key_id: str, *, actor: Actor | None = None) -> ApiKeyInfo:
        async with transaction(self._sessions, "read an API key") as session:
            return key_info(await _visible_key(session, actor, key_id))

    async def revoke(self, key_id: str, *, actor: Actor | None = None) -> ApiKeyInfo:
        """Revoke a key (again revoking a revoked key changes nothing and is not audited)."""
        async with transaction(self._sessions, "revoke an API key") as session:
            row = await _visible_key(session, actor, key_id)
            if row.revoked_at is None:
                row.revoked_at = datetime.now(UTC)
                record(
                    session,
                    actor=actor or Actor.internal("service"),
                    action="key.revoked",
                    tenant_id=row.tenant_id,
                    target_type="api_key",
                    target_id=row.id,
                    details=audit_details(row),
                )
            self._cache.forget(row.key_hash)
            return key_info(row)

    async def principal(self, key_id: str) -> Principal:
        """The principal of a key by its id, checked like a bearer key (the batch runner acts
        as the key that created a batch); AuthenticationError if gone, revoked or expired."""
        async with transaction(self._sessions, "load an API key") as session:
            found = (
                await session.execute(
                    select(ApiKey, Tenant)
                    .join(Tenant, ApiKey.tenant_id == Tenant.id)
                    .where(ApiKey.id == key_id)
                )
            ).first()
        if found is None:
            raise AuthenticationError(
                f"The API key {key_id} no longer exists.", code="invalid_api_key"
            )
        row, tenant = found
        if row.revoked_at is not None or (
            row.expires_at is not None and row.expires_at <= datetime.now(UTC)
        ):
            raise AuthenticationError(
                f"The API key ({row.key_prefix}...) has been revoked or has expired.",
                code="invalid_api_key",
            )
        return principal_of(row, tenant)

    async def ensure_admin_key(self, configured: SecretStr | None) -> str | None:
        """Make sure an operator can get in; see :mod:`tidegate.tenancy.admin_key`."""
        if configured is not None:
            self._refused.forget(hash_key(configured.get_secret_value()))
        return await ensure_admin_key(self._sessions, configured)

    async def _verify(self, key_hash: str) -> Principal:
        try:
            return await self._lookup(key_hash)
        except AuthenticationError as error:
            self._refused.put(key_hash, error)
            raise
        except StoreUnavailableError:
            # The store is down: a key verified recently keeps working (its revocation cannot
            # be read now anyway); an unknown one gets the 503.
            stale = self._cache.stale(key_hash)
            if stale is None:
                raise
            return stale

    async def _lookup(self, key_hash: str) -> Principal:
        now = datetime.now(UTC)
        async with transaction(self._sessions, "check an API key") as session:
            found = (
                await session.execute(
                    select(ApiKey, Tenant)
                    .join(Tenant, ApiKey.tenant_id == Tenant.id)
                    .where(ApiKey.key_hash == key_hash)
                )
            ).first()
            if found is None or not hmac.compare_digest(found[0].key_hash, key_hash):
                raise AuthenticationError(
                    f"Incorrect API key provided. {_HOW_TO_GET_A_KEY}", code="invalid_api_key"
                )
            row, tenant = found
            if row.revoked_at is not None:
                raise AuthenticationError(
                    f"This API key ({row.key_prefix}...) has been revoked. {_HOW_TO_GET_A_KEY}",
                    code="invalid_api_key",
                )
            if row.expires_at is not None and row.expires_at <= now:
                raise AuthenticationError(
                    f"This API key ({row.key_prefix}...) expired on "
                    f"{row.expires_at:%Y-%m-%d %H:%M} UTC. {_HOW_TO_GET_A_KEY}",
                    code="invalid_api_key",
                )
            row.last_used_at = now  # at most once per TTL per key per process
            principal = principal_of(row, tenant)
            expires_at = row.expires_at
        self._cache.put(key_hash, principal, expires_at, now)
        return principal

    def _settle(self, key_hash: str, done: asyncio.Future[Principal]) -> None:
        self._inflight.pop(key_hash, None)
        if not done.cancelled():
            done.exception()  # mark it retrieved even if every waiter went away


async def _visible_key(session: AsyncSession, actor: Actor | None, key_id: str) -> ApiKey:
    row = await session.get(ApiKey, key_id)
    if row is None or not (actor or Actor.internal("service")).sees(row.tenant_id):
        # The same answer for a missing key and another tenant's key.
        raise NotFoundError(
            f"No API key with id '{key_id}'. See the ids with `tidegate keys list` "
            "or GET /admin/keys.",
            param="key_id",
        )
    return row


async def _grant(session: AsyncSession, actor: Actor, tenant: Tenant) -> Grant:
    """What a tenant admin holds, read in the transaction that uses it (not from the cache,
    so a ceiling the operator just lowered applies at once)."""
    own = await session.get(ApiKey, actor.key_id) if actor.key_id is not None else None
    if own is None or own.tenant_id != tenant.id or key_info(own).status() != "active":
        raise PermissionDeniedError(
            "Only an admin key of this tenant, or the operator, may create its keys.",
            code="admin_key_required",
        )
    return Grant(
        tier=parse_tier(tenant.tier),
        tenant=TenantSettings.model_validate(tenant.settings),
        key=KeySettings.model_validate(own.settings),
        key_expires_at=own.expires_at,
    )


def principal_of(key: ApiKey, tenant: Tenant) -> Principal:
    return Principal(
        key_id=key.id,
        role=parse_role(key.role),
        name=key.name,
        tenant_id=tenant.id,
        tenant_name=tenant.name,
        tier=parse_tier(tenant.tier),
        tenant=TenantSettings.model_validate(tenant.settings),
        key=KeySettings.model_validate(key.settings),
    )
