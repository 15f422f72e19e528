"""What an API key is: its format, its hash, its stored row and what may be shown of it.

Keys look like ``tg-<43 url-safe chars>`` (256 random bits) and are stored only as SHA-256 hex
digests; a fast hash is enough because the input has full entropy, and it keeps a cache miss
cheap. Nothing here ever returns the hash or the plaintext in an info object.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ValidationError

from tidegate.errors import InvalidRequestError
from tidegate.store.models import SYSTEM_TENANT_ID, ApiKey
from tidegate.tenancy.policy import ROLES, KeySettings, Role
from tidegate.tenancy.tenants import settings_error

KeyStatus = Literal["active", "revoked", "expired"]

KEY_SCHEME = "tg-"
PREFIX_LEN = 8


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """What may be shown about a key: never its hash or plaintext."""

    id: str
    name: str
    prefix: str
    role: Role
    tenant_id: str
    settings: KeySettings
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


def parse_role(value: str) -> Role:
    for role in ROLES:
        if value == role:
            return role
    raise InvalidRequestError(
        f"Unknown role {value!r}; use one of {', '.join(ROLES)}.", param="role"
    )


def parse_key_settings(data: KeySettings | Mapping[str, Any] | None) -> KeySettings:
    if isinstance(data, KeySettings):
        return data
    try:
        return KeySettings.model_validate(dict(data or {}))
    except ValidationError as error:
        raise settings_error(error, "settings") from None


def new_row(
    plaintext: str,
    *,
    name: str,
    role: Role,
    now: datetime,
    tenant_id: str = SYSTEM_TENANT_ID,
    expires_at: datetime | None = None,
    settings: KeySettings | None = None,
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
        tenant_id=tenant_id,
        settings=(settings or KeySettings()).model_dump(mode="json", exclude_defaults=True),
    )


def key_info(row: ApiKey) -> ApiKeyInfo:
    return ApiKeyInfo(
        id=row.id,
        name=row.name,
        prefix=row.key_prefix,
        role=parse_role(row.role),
        tenant_id=row.tenant_id,
        settings=KeySettings.model_validate(row.settings),
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


def audit_details(row: ApiKey) -> dict[str, Any]:
    """What the audit log keeps about a key: no plaintext, prefix or hash."""
    return {
        "name": row.name,
        "role": row.role,
        "expires_at": row.expires_at.isoformat() if row.expires_at else None,
        "settings": row.settings,
    }
