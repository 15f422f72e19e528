"""API keys: creation, listing, revocation and the per-request authentication check.

Keys look like ``tg-<43 url-safe chars>`` (256 random bits) and are stored only as SHA-256 hex
digests; a fast hash is enough because the input has full entropy, and it keeps a cache miss
cheap. Verified keys are cached in-process for ``cache_ttl_s`` so the hot path costs one hash
and one dict lookup; a revocation made anywhere (another gateway replica, the CLI) therefore
takes effect within the TTL. Plaintext keys never appear in logs or error messages.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import SecretStr
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.errors import AuthenticationError, InvalidRequestError, NotFoundError
from tidegate.store.db import lock, transaction
from tidegate.store.models import ApiKey

Role = Literal["admin", "member"]
ROLES: tuple[Role, ...] = ("admin", "member")
KeyStatus = Literal["active", "revoked", "expired"]

KEY_SCHEME = "tg-"
PREFIX_LEN = 8
MIN_CONFIGURED_KEY_LEN = 16
_HOW_TO_GET_A_KEY = (
    "Send it as `Authorization: Bearer <key>`; an administrator can create one with "
    "`tidegate keys create --name NAME`."
)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as, once its key is verified."""

    key_id: str
    role: Role
    name: str


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """What may be shown about a key: never its hash or plaintext."""

    id: str
    name: str
    prefix: str
    role: Role
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def status(self, now: datetime | None = None) -> KeyStatus:
        now = now or datetime.now(UTC)
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


def generate_key() -> str:
    return KEY_SCHEME + secrets.token_urlsafe(32)


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class _Cached:
    principal: Principal
    key_hash: str
    deadline: float  # time.monotonic() after which the key must be checked again


class KeyService:
    """Keys in the store, plus the cached verification the request path calls."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        cache_ttl_s: float,
        cache_max_entries: int = 10_000,
    ) -> None:
        self._sessions = sessions
        self._ttl = cache_ttl_s
        self._max_entries = cache_max_entries
        self._cache: dict[str, _Cached] = {}
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
        entry = self._cache.get(key_hash)
        if (
            entry is not None
            and entry.deadline > time.monotonic()
            and hmac.compare_digest(entry.key_hash, key_hash)
        ):
            return entry.principal
        pending = self._inflight.get(key_hash)
        if pending is None:
            pending = asyncio.ensure_future(self._verify(key_hash))
            self._inflight[key_hash] = pending
            pending.add_done_callback(lambda done: self._settle(key_hash, done))
        # shield: a caller that goes away must not cancel the lookup others are waiting on.
        return await asyncio.shield(pending)

    async def create(
        self, name: str, role: Role, expires_at: datetime | None = None
    ) -> tuple[ApiKeyInfo, str]:
        """Store a new key; returns its info and the plaintext, which is not kept anywhere."""
        name = name.strip()
        if not name:
            raise InvalidRequestError("A key needs a non-empty name.", param="name")
        if role not in ROLES:
            raise InvalidRequestError(
                f"Unknown role {role!r}; use one of {', '.join(ROLES)}.", param="role"
            )
        now = datetime.now(UTC)
        if expires_at is not None and (expires_at.tzinfo is None or expires_at <= now):
            raise InvalidRequestError(
                "expires_at must be a time zone aware time in the future.", param="expires_at"
            )
        plaintext = generate_key()
        row = _new_row(plaintext, name=name, role=role, now=now, expires_at=expires_at)
        async with transaction(self._sessions, "create an API key") as session:
            session.add(row)
        return _info(row), plaintext

    async def list(self) -> builtins.list[ApiKeyInfo]:
        """Every key, oldest first, revoked and expired ones included."""
        async with transaction(self._sessions, "list API keys") as session:
            rows = await session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id))
            return [_info(row) for row in rows]

    async def revoke(self, key_id: str) -> ApiKeyInfo:
        """Revoke a key (again revoking a revoked key changes nothing)."""
        async with transaction(self._sessions, "revoke an API key") as session:
            row = await session.get(ApiKey, key_id)
            if row is None:
                raise NotFoundError(
                    f"No API key with id {key_id!r}. See the ids with `tidegate keys list`.",
                    param="key_id",
                )
            if row.revoked_at is None:
                row.revoked_at = datetime.now(UTC)
            self._forget(row.key_hash)
            return _info(row)

    async def ensure_admin_key(self, configured: SecretStr | None) -> str | None:
        """Make sure an admin can get in; returns a newly generated admin key, else None.

        With a configured key, its hash is stored as an admin key if missing (nothing is
        returned: the operator already knows it). Without one, a key is generated only when no
        active admin key exists; the caller prints it once.
        """
        now = datetime.now(UTC)
        async with transaction(self._sessions, "set up the admin key") as session:
            await lock(session, "admin-key")  # two processes starting at once create one key
            if configured is not None:
                await _ensure_configured(session, configured.get_secret_value(), now)
                return None
            active_admin = await session.scalar(
                select(ApiKey.id)
                .where(ApiKey.role == "admin", ApiKey.revoked_at.is_(None))
                .where(or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now))
                .limit(1)
            )
            if active_admin is not None:
                return None
            plaintext = generate_key()
            session.add(_new_row(plaintext, name="admin (generated)", role="admin", now=now))
            return plaintext

    async def _verify(self, key_hash: str) -> Principal:
        now = datetime.now(UTC)
        async with transaction(self._sessions, "check an API key") as session:
            row = await session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))
            if row is None or not hmac.compare_digest(row.key_hash, key_hash):
                raise AuthenticationError(
                    f"Incorrect API key provided. {_HOW_TO_GET_A_KEY}", code="invalid_api_key"
                )
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
            principal = Principal(key_id=row.id, role=_role(row.role), name=row.name)
            expires_at = row.expires_at
        self._remember(key_hash, principal, expires_at, now)
        return principal

    def _remember(
        self, key_hash: str, principal: Principal, expires_at: datetime | None, now: datetime
    ) -> None:
        ttl = self._ttl
        if expires_at is not None:
            ttl = min(ttl, (expires_at - now).total_seconds())  # an expiring key leaves on time
        if ttl <= 0:
            return
        if len(self._cache) >= self._max_entries:
            self._evict()
        self._cache[key_hash] = _Cached(principal, key_hash, time.monotonic() + ttl)

    def _evict(self) -> None:
        now = time.monotonic()
        for key_hash in [h for h, entry in self._cache.items() if entry.deadline <= now]:
            del self._cache[key_hash]
        # Still full: drop the oldest insertion; dicts keep insertion order.
        while len(self._cache) >= self._max_entries:
            del self._cache[next(iter(self._cache))]

    def _forget(self, key_hash: str) -> None:
        self._cache.pop(key_hash, None)

    def _settle(self, key_hash: str, done: asyncio.Future[Principal]) -> None:
        self._inflight.pop(key_hash, None)
        if not done.cancelled():
            done.exception()  # mark it retrieved even if every waiter went away


async def _ensure_configured(session: AsyncSession, plaintext: str, now: datetime) -> None:
    if len(plaintext) < MIN_CONFIGURED_KEY_LEN:
        raise InvalidRequestError(
            f"admin_key must be at least {MIN_CONFIGURED_KEY_LEN} characters long; leave it "
            "unset and tidegate generates a strong one at first start.",
            param="admin_key",
        )
    row = await session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(plaintext)))
    if row is None:
        session.add(_new_row(plaintext, name="admin (from config)", role="admin", now=now))
        return
    info = _info(row)
    if info.role != "admin" or info.status(now) != "active":
        # Re-enabling it silently would undo an operator's revocation.
        state = "a member key" if info.role != "admin" else info.status(now)
        raise InvalidRequestError(
            f"The configured admin_key is stored as key {info.id}, which is {state}. "
            "Configure a different admin_key, or unset it to have one generated.",
            param="admin_key",
        )


def _new_row(
    plaintext: str, *, name: str, role: Role, now: datetime, expires_at: datetime | None = None
) -> ApiKey:
    # At most a quarter of a key is shown, so short configured keys do not leak.
    prefix = plaintext[: min(PREFIX_LEN, len(plaintext) // 4)]
    return ApiKey(
        id="key_" + secrets.token_hex(12),
        name=name,
        key_hash=hash_key(plaintext),
        key_prefix=prefix,
        role=role,
        created_at=now,
        expires_at=expires_at,
        revoked_at=None,
        last_used_at=None,
    )


def _role(value: str) -> Role:
    for role in ROLES:
        if value == role:
            return role
    raise ValueError(f"unknown role {value!r} in the store")


def _info(row: ApiKey) -> ApiKeyInfo:
    return ApiKeyInfo(
        id=row.id,
        name=row.name,
        prefix=row.key_prefix,
        role=_role(row.role),
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )
