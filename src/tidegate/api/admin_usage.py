"""GET /admin/usage (rollups) and GET /admin/usage/records (raw records, paginated).

Admin keys only. The operator (an admin key of the system tenant) sees every tenant and may
name one with ``tenant_id``; a tenant's admin sees only its own tenant, and naming another
tenant answers exactly as naming one that does not exist (same status, same body), so ids of
other tenants cannot be probed.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tidegate.api.asgi import bearer_token
from tidegate.api.services import ServicesSlot
from tidegate.errors import (
    InvalidRequestError,
)
from tidegate.metering.periods import parse_bound
from tidegate.metering.queries import GroupBy, UsageQueries
from tidegate.tenancy.actors import Actor

_GROUPS: tuple[GroupBy, ...] = ("day", "model")


def build_usage_routes(slot: ServicesSlot) -> list[BaseRoute]:
    endpoints = UsageEndpoints(slot=slot)
    return [
        Route("/admin/usage", endpoints.rollup, methods=["GET"]),
        Route("/admin/usage/records", endpoints.records, methods=["GET"]),
    ]


class UsageEndpoints:
    def __init__(self, *, slot: ServicesSlot) -> None:
        self._slot = slot

    async def rollup(self, request: Request) -> Response:
        usage, tenant_id = await self._authorize(request)
        params = request.query_params
        group_by = _group_by(params.get("group_by", "day"))
        since = parse_bound(params.get("since"), param="since", end=False)
        until = parse_bound(params.get("until"), param="until", end=True)
        rows = await usage.usage_rollup(tenant_id, since, until, group_by)
        data = []
        for row in rows:
            item: dict[str, object] = {"tenant_id": row.tenant_id}
            item[group_by] = row.day if group_by == "day" else row.model
            item.update(
                requests=row.requests,
                prompt_tokens=row.prompt_tokens,
                cached_tokens=row.cached_tokens,
                completion_tokens=row.completion_tokens,
                total_tokens=row.total_tokens,
                cost_usd=row.cost_usd,
            )
            data.append(item)
        body = {"object": "usage.rollup", "group_by": group_by, "since": since, "until": until}
        return _json({**body, "data": data})

    async def records(self, request: Request) -> Response:
        usage, tenant_id = await self._authorize(request)
        params = request.query_params
        page = await usage.list_records(
            tenant_id,
            parse_bound(params.get("since"), param="since", end=False),
            parse_bound(params.get("until"), param="until", end=True),
            limit=_limit(params.get("limit", "100")),
            after=params.get("after") or None,
            client_request_id=params.get("client_request_id") or None,
        )
        return _json(
            {
                "object": "list",
                "data": page.records,
                "has_more": page.next_cursor is not None,
                "next_cursor": page.next_cursor,
            }
        )

    async def _authorize(self, request: Request) -> tuple[UsageQueries, str | None]:
        """The usage queries and the tenant the caller may see (None: every tenant)."""
        services = self._slot.get()
        actor = Actor.admin(await services.keys.authenticate(bearer_token(request.scope)))
        requested = request.query_params.get("tenant_id") or None
        if requested is not None:
            # A foreign tenant is answered exactly like a missing one.
            await services.tenants.get(requested, actor=actor)
            return services.usage, requested
        return services.usage, actor.tenant_id


def _group_by(value: str) -> GroupBy:
    for group in _GROUPS:
        if value == group:
            return group
    raise InvalidRequestError(
        f"group_by must be one of {', '.join(_GROUPS)}, got {value!r}.", param="group_by"
    )


def _limit(value: str) -> int:
    # isascii: str.isdigit() is true for '²', which int() refuses.
    if not (value.isascii() and value.isdigit()) or len(value) > 9:
        raise InvalidRequestError(
            f"limit must be a whole number from 1 to 1000, got {value[:40]!r}.", param="limit"
        )
    return int(value)


def _json(data: object) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")
