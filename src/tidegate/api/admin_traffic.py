"""The /admin API of model traffic and versions, for the operator's admin keys only.

HTTP only: each handler authorizes the key like the other /admin routes (401 without a valid
key, 403 for member keys and for other tenants' admin keys) and calls the rollout services,
which check names against the routing table, audit every change and apply it in this gateway
at once (the others follow within rollouts.sync_interval_s). 404 when rollouts are disabled.

    GET  /admin/models/{model}/traffic    the split, stable pool, shadow and active rollout
    PUT  /admin/models/{model}/traffic    {"weights": {"a": 95, "b": 5} | [["b", 5], ["a", 95]],
                                           "stable_pool": "a", "sticky_by": "session"|"tenant",
                                           "shadow": {"pool": "b", "sample": 0.1} | null}
    POST /admin/models/{model}/rollback   everything to the stable pool; ends an active rollout
    GET  /admin/models/{model}/versions   newest first
    POST /admin/models/{model}/versions   {"pool", "source", "revision", "profile_hash"}
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tidegate.api.admin import authorize_rollouts
from tidegate.api.admin_json import json_response, unix
from tidegate.api.input_guard import read_json_as
from tidegate.api.services import ApiServices, ServicesSlot
from tidegate.protocol.traffic import parse_traffic, parse_version
from tidegate.rollout.policies import ShadowChange, SplitChange, TrafficInfo
from tidegate.rollout.versions import VersionInfo
from tidegate.rollout.wiring import RolloutServices
from tidegate.tenancy.actors import Actor


def build_traffic_routes(slot: ServicesSlot) -> list[BaseRoute]:
    routes = TrafficRoutes(slot=slot)
    return [
        Route("/admin/models/{model:path}/traffic", routes.get_traffic, methods=["GET"]),
        Route("/admin/models/{model:path}/traffic", routes.put_traffic, methods=["PUT"]),
        Route("/admin/models/{model:path}/rollback", routes.rollback, methods=["POST"]),
        Route("/admin/models/{model:path}/versions", routes.list_versions, methods=["GET"]),
        Route("/admin/models/{model:path}/versions", routes.create_version, methods=["POST"]),
    ]


class TrafficRoutes:
    def __init__(self, *, slot: ServicesSlot) -> None:
        self._slot = slot

    async def get_traffic(self, request: Request) -> Response:
        _, rollouts, _ = await self._authorize(request)
        info = await rollouts.policies.get(request.path_params["model"])
        return json_response(traffic_json(info))

    async def put_traffic(self, request: Request) -> Response:
        services, rollouts, actor = await self._authorize(request)
        update = await read_json_as(request, services.max_body_bytes, parse_traffic)
        split = None
        if update.weights is not None:
            split = SplitChange(update.weights, update.sticky_by, update.stable_pool)
        shadow = None
        if update.shadow is not None:
            shadow = ShadowChange(update.shadow.pool, update.shadow.sample)
        info = await rollouts.policies.update(
            request.path_params["model"], split=split, shadow=shadow, actor=actor
        )
        return json_response(traffic_json(info))

    async def rollback(self, request: Request) -> Response:
        _, rollouts, actor = await self._authorize(request)
        result = await rollouts.policies.rollback(request.path_params["model"], actor=actor)
        return json_response({**traffic_json(result.traffic), "rolled_back": result.rolled_back})

    async def list_versions(self, request: Request) -> Response:
        _, rollouts, _ = await self._authorize(request)
        versions = await rollouts.versions.list(request.path_params["model"])
        return json_response({"object": "list", "data": [version_json(v) for v in versions]})

    async def create_version(self, request: Request) -> Response:
        services, rollouts, actor = await self._authorize(request)
        body = await read_json_as(request, services.max_body_bytes, parse_version)
        info = await rollouts.versions.register(
            request.path_params["model"],
            body.pool,
            body.source,
            body.revision,
            body.profile_hash,
            actor=actor,
        )
        return json_response(version_json(info), 201)

    async def _authorize(self, request: Request) -> tuple[ApiServices, RolloutServices, Actor]:
        return await authorize_rollouts(self._slot, request)


def traffic_json(info: TrafficInfo) -> dict[str, Any]:
    rollout = info.rollout
    return {
        "object": "model.traffic",
        "model": info.model,
        "stable_pool": info.stable_pool,
        "weights": [[pool, weight] for pool, weight in info.weights],
        "shares": info.shares(),
        "sticky_by": info.sticky_by,
        "shadow": (
            None
            if info.shadow_pool is None
            else {"pool": info.shadow_pool, "sample": info.shadow_sample}
        ),
        "revision": info.revision,
        "updated_at": unix(info.updated_at),
        "updated_by": info.updated_by,
        "rollout": (
            None
            if rollout is None
            else {
                "id": rollout.id,
                "state": "running" if rollout.running else "paused",
                "step_index": rollout.step_index,
                "stable_pool": rollout.stable_pool,
                "candidate_pool": rollout.candidate_pool,
            }
        ),
    }


def version_json(info: VersionInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "object": "model.version",
        "model": info.model,
        "pool": info.pool,
        "source": info.source,
        "revision": info.revision,
        "profile_hash": info.profile_hash,
        "created_at": unix(info.created_at),
        "created_by": info.created_by,
    }
