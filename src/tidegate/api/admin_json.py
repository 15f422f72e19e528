"""JSON shapes of the /admin API's objects (OpenAI style: ``object`` names the type, times are
Unix seconds, lists carry ``has_more`` and the ids to page with)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import orjson
from starlette.responses import Response

from tidegate.tenancy.audit import AuditEntry
from tidegate.tenancy.keys import ApiKeyInfo
from tidegate.tenancy.tenants import TenantInfo

T = TypeVar("T")


def json_response(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def unix(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment is not None else None


def tenant_json(info: TenantInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "object": "tenant",
        "name": info.name,
        "tier": info.tier,
        "settings": info.settings.model_dump(mode="json"),
        "created_at": unix(info.created_at),
        "updated_at": unix(info.updated_at),
    }


def key_json(info: ApiKeyInfo, plaintext: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": info.id,
        "object": "api_key",
        "name": info.name,
        "prefix": info.prefix,
        "role": info.role,
        "tenant_id": info.tenant_id,
        "status": info.status(),
        "settings": info.settings.model_dump(mode="json"),
        "created_at": unix(info.created_at),
        "expires_at": unix(info.expires_at),
        "revoked_at": unix(info.revoked_at),
        "last_used_at": unix(info.last_used_at),
    }
    if plaintext is not None:
        data["key"] = plaintext  # the only time it is ever shown
    return data


def audit_json(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "object": "audit_event",
        "at": unix(entry.at),
        "actor": {"name": entry.actor, "key_id": entry.actor_key_id},
        "tenant_id": entry.tenant_id,
        "action": entry.action,
        "target": {"type": entry.target_type, "id": entry.target_id},
        "details": entry.details,
    }


def page_json(
    items: Sequence[T],
    limit: int,
    render: Callable[[T], dict[str, Any]],
) -> dict[str, Any]:
    """`items` was fetched with limit + 1, so one more than `limit` means there is more."""
    shown = [render(item) for item in items[:limit]]
    return {
        "object": "list",
        "data": shown,
        "first_id": shown[0]["id"] if shown else None,
        "last_id": shown[-1]["id"] if shown else None,
        "has_more": len(items) > limit,
    }
