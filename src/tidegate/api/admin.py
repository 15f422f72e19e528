"""The /admin API: tenants, keys and the audit log, for admin keys only.

HTTP only: every handler authenticates the bearer key, turns it into an
:class:`~tidegate.tenancy.actors.Actor` (403 for member keys) and calls a gateway service,
which enforces the tenant scope and audits the change. Errors are TidegateErrors, rendered by
the app's one error table. Lists take ``limit`` (1-100, default 20) and ``after`` (the
``last_id`` of the previous page).

    POST   /admin/tenants            operator           create a tenant
    GET    /admin/tenants            admin              list (a tenant's admin: its own)
    GET    /admin/tenants/{id}       admin              read
    PATCH  /admin/tenants/{id}       operator           change name, tier, settings (merge patch)
    DELETE /admin/tenants/{id}       operator           delete (refused while it has active keys)
    POST   /admin/keys               admin              create; the response holds the key once
    GET    /admin/keys               admin              list (?tenant_id= to narrow)
    GET    /admin/keys/{id}          admin              read
    DELETE /admin/keys/{id}          admin              revoke
    GET    /admin/audit              admin              newest first (?tenant_id= to narrow)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tidegate.api.admin_json import (
    audit_json,
    json_response,
    key_json,
    page_json,
    tenant_json,
)
from tidegate.api.asgi import bearer_token
from tidegate.api.input_guard import read_json_as
from tidegate.api.params import int_param, page_limit
from tidegate.api.services import ApiServices, ServicesSlot
from tidegate.errors import NotFoundError
from tidegate.pipeline.limits.seeding import seed_budget_spend
from tidegate.protocol.admin import (
    Body,
    KeyCreate,
    TenantCreate,
    TenantUpdate,
    parse_admin_body,
)
from tidegate.rollout.traffic_checks import operator_only
from tidegate.rollout.wiring import RolloutServices
from tidegate.tenancy.actors import Actor


class AdminRoutes:
    def __init__(self, *, services: ServicesSlot) -> None:
        self._slot = services

    async def create_tenant(self, request: Request) -> Response:
        services, actor = await self._authorize(request)
        body = await _body(request, services, TenantCreate)
        info = await services.tenants.create(body.name, body.tier, body.settings, actor=actor)
        return json_response(tenant_json(info), 201)

    async def list_tenants(self, request: Request) -> Response:
        services, actor = await self._authorize(request)
        limit = page_limit(request)
        infos = await services.tenants.list(
            actor=actor, limit=limit + 1, after=request.query_params.get("after")
        )
        return json_response(page_json(infos, limit, tenant_json))

    async def get_tenant(self, request: Request) -> Response:
        services, actor = await self._authorize(request)
        info = await services.tenants.get(request.path_params["tenant_id"], actor=actor)
        return json_response(tenant_json(info))

    async def update_tenant(self, request: Request) -> Response:
        services, actor = await self._authorize(request)
        tenant_id = request.path_params["tenant_id"]
        body = await _body(request, services, TenantUpdate)
        info = await services.tenants.update(
            tenant_id, name=body.name, tier=body.tier, settings=body.settings, actor=actor
        )
        services.keys.forget_tenant(tenant_id)  # this process applies the change at once
        if services.limiter is not None and body.settings and "budgets" in body.settings:
            # Budgets the tenant had no counters for start from what it spent so far today
            # and this month, as at gateway start; counters a store already keeps stay.
            await seed_budget_spend(
                services.limiter,
                services.usage,
                tenant_id=info.id,
                budgets=info.settings.budgets,
            )
        return json_response(tenant_json(info))

    async def delete_tenant(self, request: Request) -> Response:
        services, actor = await self._authorize(request)
        info = await services.tenants.delete(request.path_params["tenant_id"], actor=actor)
        services.keys.forget_tenant(info.id)
        return json_response({"id": info.id, "object": "tenant.deleted", "deleted": True})

    async def create_key(self, request: Request) -> Response:
        services, actor = await self._authorize(request)
        body = await _body(request, services, KeyCreate)
        tenant_id = body.tenant_id or actor.home_tenant_id
        expires_at = None
        if body.expires_in_days is not None:
            expires_at = datetime.now(UTC) + timedelta(days=body.expires_in_days)
        info, plaintext = await services.keys.create(
            body.name, body.role, tenant_id, expires_at, body.settings, actor=actor
        )
        return json_response(key_json(info, plaintext), 201)

    async def list_keys(self, request: Request) -> Response:
        services, actor = await self._authorize(request)
        limit = page_limit(request)
        infos = await services.keys.list(
            tenant_id=request.query_params.get("tenant_id"),
            actor=actor,
            limit=limit + 1,
            after=request.query_params.get("after"),
        )
        return json_response(page_json(infos, limit, key_json))

    async def get_key(self, request: Request) -> Response:
        services, actor = await self._authorize(request)
        info = await services.keys.get(request.path_params["key_id"], actor=actor)
        return json_response(key_json(info))

    async def revoke_key(self, request: Request) -> Response:
        services, actor = await self._authorize(request)
        info = await services.keys.revoke(request.path_params["key_id"], actor=actor)
        return json_response(key_json(info))

    async def list_audit(self, request: Request) -> Response:
        services, actor = await self._authorize(request)
        limit = page_limit(request)
        entries = await services.audit.list(
            actor=actor,
            tenant_id=request.query_params.get("tenant_id"),
            limit=limit + 1,
            after=int_param(request, "after"),
        )
        return json_response(page_json(entries, limit, audit_json))

    async def _authorize(self, request: Request) -> tuple[ApiServices, Actor]:
        return await authorize_admin(self._slot, request)


async def authorize_admin(slot: ServicesSlot, request: Request) -> tuple[ApiServices, Actor]:
    """The services and the acting admin key; 401 without a valid key, 403 for a member key."""
    services = slot.get()
    principal = await services.keys.authenticate(bearer_token(request.scope))
    return services, Actor.admin(principal)


async def authorize_rollouts(
    slot: ServicesSlot, request: Request
) -> tuple[ApiServices, RolloutServices, Actor]:
    """For the routes of model traffic, versions, shadow comparisons and rollouts, which span
    every tenant: 401 without a valid key, 403 unless the key is an operator's admin key, 404
    when rollouts are disabled."""
    services, actor = await authorize_admin(slot, request)
    operator_only(actor)
    if services.rollouts is None:
        raise NotFoundError(
            "Model rollouts are disabled on this gateway (rollouts.enabled is false): traffic "
            "policies, versions, shadow comparisons and rollouts are not served here. Set "
            "rollouts.enabled to true (or TIDEGATE_ROLLOUTS__ENABLED=true) and restart."
        )
    return services, services.rollouts, actor


def build_admin_routes(services: ServicesSlot) -> list[BaseRoute]:
    admin = AdminRoutes(services=services)
    return [
        Route("/admin/tenants", admin.create_tenant, methods=["POST"]),
        Route("/admin/tenants", admin.list_tenants, methods=["GET"]),
        Route("/admin/tenants/{tenant_id}", admin.get_tenant, methods=["GET"]),
        Route("/admin/tenants/{tenant_id}", admin.update_tenant, methods=["PATCH"]),
        Route("/admin/tenants/{tenant_id}", admin.delete_tenant, methods=["DELETE"]),
        Route("/admin/keys", admin.create_key, methods=["POST"]),
        Route("/admin/keys", admin.list_keys, methods=["GET"]),
        Route("/admin/keys/{key_id}", admin.get_key, methods=["GET"]),
        Route("/admin/keys/{key_id}", admin.revoke_key, methods=["DELETE"]),
        Route("/admin/audit", admin.list_audit, methods=["GET"]),
    ]


async def _body(request: Request, services: ApiServices, model: type[Body]) -> Body:
    return await read_json_as(
        request, services.max_body_bytes, lambda data: parse_admin_body(model, data)
    )
