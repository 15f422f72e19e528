"""The /admin API of LoRA adapters, for the operator's admin keys only (a tenant's admin key
gets 403: adapters are models every tenant may see).

    GET    /admin/adapters          configured and runtime adapter versions, with each replica's
                                    load state
    POST   /admin/adapters          {"name", "path" | "hub_id", "version"?, "pool"?}: loads it on
                                    every replica of the base pool (201), or a 400 with the
                                    engine's refusal
    DELETE /admin/adapters/{name}   a runtime adapter version (NAME or NAME@VERSION): unloads it
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tidegate.api.admin import authorize_admin
from tidegate.api.admin_json import json_response
from tidegate.api.input_guard import read_json_as
from tidegate.api.services import ApiServices, ServicesSlot
from tidegate.errors import NotFoundError
from tidegate.protocol.adapters import parse_adapter
from tidegate.rollout.adapter_sync import AdapterSpec
from tidegate.rollout.adapters import AdapterInfo, AdapterService
from tidegate.rollout.traffic_checks import operator_only
from tidegate.tenancy.actors import Actor


def build_adapter_routes(slot: ServicesSlot) -> list[BaseRoute]:
    routes = AdapterRoutes(slot=slot)
    return [
        Route("/admin/adapters", routes.list_adapters, methods=["GET"]),
        Route("/admin/adapters", routes.add_adapter, methods=["POST"]),
        Route("/admin/adapters/{name:path}", routes.remove_adapter, methods=["DELETE"]),
    ]


class AdapterRoutes:
    def __init__(self, *, slot: ServicesSlot) -> None:
        self._slot = slot

    async def list_adapters(self, request: Request) -> Response:
        _, adapters, _ = await self._authorize(request)
        infos = await adapters.list()
        return json_response({"object": "list", "data": [adapter_json(i) for i in infos]})

    async def add_adapter(self, request: Request) -> Response:
        services, adapters, actor = await self._authorize(request)
        change = await read_json_as(request, services.max_body_bytes, parse_adapter)
        info = await adapters.add(change, actor=actor)
        return json_response(adapter_json(info), 201)

    async def remove_adapter(self, request: Request) -> Response:
        _, adapters, actor = await self._authorize(request)
        spec = await adapters.remove(request.path_params["name"][:300], actor=actor)
        return json_response({**spec_json(spec), "deleted": True})

    async def _authorize(self, request: Request) -> tuple[ApiServices, AdapterService, Actor]:
        services, actor = await authorize_admin(self._slot, request)
        operator_only(actor)
        if services.adapters is None:
            raise NotFoundError("LoRA adapters are not served by this gateway.")
        return services, services.adapters, actor


def spec_json(spec: AdapterSpec) -> dict[str, Any]:
    return {
        "object": "adapter",
        "id": spec.target,
        "name": spec.name,
        "version": spec.version,
        "pool": spec.pool,
        "source": spec.source,
        "configured": spec.configured,
    }


def adapter_json(info: AdapterInfo) -> dict[str, Any]:
    return {
        **spec_json(info.spec),
        "replicas": [
            {"id": load.replica, "loaded": load.loaded, "detail": load.detail}
            for load in info.replicas
        ],
    }
