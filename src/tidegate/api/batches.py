"""POST /v1/batches, GET /v1/batches[/{id}], POST /v1/batches/{id}/cancel: HTTP only.

The caller's API key scopes everything to its tenant; the logic is ``batch.service``.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tidegate.api.asgi import bearer_token
from tidegate.api.input_guard import read_control_json
from tidegate.api.params import int_param
from tidegate.api.services import ApiServices, ServicesSlot
from tidegate.errors import NotFoundError
from tidegate.protocol.batches import parse_create
from tidegate.tenancy.keys import Principal


def _json(data: object) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


class BatchRoutes:
    def __init__(self, *, services: ServicesSlot) -> None:
        self._slot = services

    async def _caller(self, request: Request) -> tuple[ApiServices, Principal]:
        services = self._slot.get()
        principal = await services.keys.authenticate(bearer_token(request.scope))
        if services.batches is None:
            raise NotFoundError("The Batch API is turned off on this gateway (batch.enabled).")
        return services, principal

    async def create(self, request: Request) -> Response:
        services, principal = await self._caller(request)
        assert services.batches is not None
        body = await read_control_json(request, services.max_body_bytes)
        parsed = parse_create(body, max_window_s=services.batches.max_window_s)
        return _json(await services.batches.create(principal, parsed))

    async def retrieve(self, request: Request) -> Response:
        services, principal = await self._caller(request)
        assert services.batches is not None
        batch_id = request.path_params["batch_id"]
        return _json(await services.batches.get(principal.tenant_id, batch_id))

    async def list(self, request: Request) -> Response:
        services, principal = await self._caller(request)
        assert services.batches is not None
        limit = int_param(request, "limit")
        after = request.query_params.get("after") or None
        return _json(await services.batches.list(principal.tenant_id, after=after, limit=limit))

    async def cancel(self, request: Request) -> Response:
        services, principal = await self._caller(request)
        assert services.batches is not None
        batch_id = request.path_params["batch_id"]
        return _json(await services.batches.cancel(principal.tenant_id, batch_id))


def build_batch_routes(services: ServicesSlot) -> list[BaseRoute]:
    routes = BatchRoutes(services=services)
    return [
        Route("/v1/batches", routes.create, methods=["POST"]),
        Route("/v1/batches", routes.list, methods=["GET"]),
        Route("/v1/batches/{batch_id}", routes.retrieve, methods=["GET"]),
        Route("/v1/batches/{batch_id}/cancel", routes.cancel, methods=["POST"]),
    ]
