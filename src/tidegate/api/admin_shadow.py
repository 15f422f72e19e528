"""The shadow comparison of a public model, for the operator's admin keys only.

GET /admin/models/{model}/shadow               summary per (primary pool, shadow pool)
                                               (?since= a UTC day or ISO time)
GET /admin/models/{model}/shadow/comparisons   the comparisons, newest first
                                               (?limit= 1-100, ?after= the previous last_id)
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tidegate.api.admin import authorize_rollouts
from tidegate.api.admin_json import json_response, page_json, unix
from tidegate.api.params import int_param, page_limit
from tidegate.api.services import ServicesSlot
from tidegate.metering.periods import parse_bound
from tidegate.rollout.shadow_reports import ComparisonRow, PairSummary, ShadowReports


def build_shadow_routes(services: ServicesSlot) -> list[BaseRoute]:
    endpoints = ShadowEndpoints(slot=services)
    return [
        Route("/admin/models/{model:path}/shadow", endpoints.summary, methods=["GET"]),
        Route(
            "/admin/models/{model:path}/shadow/comparisons", endpoints.comparisons, methods=["GET"]
        ),
    ]


class ShadowEndpoints:
    def __init__(self, *, slot: ServicesSlot) -> None:
        self._slot = slot

    async def summary(self, request: Request) -> Response:
        reports = await self._authorize(request)
        model = request.path_params["model"]
        since = parse_bound(request.query_params.get("since"), param="since", end=False)
        pairs = await reports.summary(model, since=since)
        return json_response(
            {
                "object": "shadow.summary",
                "model": model,
                "since": unix(since),
                "data": [pair_json(pair) for pair in pairs],
            }
        )

    async def comparisons(self, request: Request) -> Response:
        reports = await self._authorize(request)
        limit = page_limit(request)
        rows = await reports.list(
            request.path_params["model"], limit=limit + 1, after=int_param(request, "after")
        )
        return json_response(page_json(rows, limit, comparison_json))

    async def _authorize(self, request: Request) -> ShadowReports:
        _, rollouts, _ = await authorize_rollouts(self._slot, request)
        return rollouts.shadow_reports


def pair_json(pair: PairSummary) -> dict[str, Any]:
    return {"object": "shadow.pair", **asdict(pair)}


def comparison_json(row: ComparisonRow) -> dict[str, Any]:
    data = asdict(row)
    data["object"] = "shadow.comparison"
    data["created_at"] = unix(row.created_at)
    data["expires_at"] = unix(row.expires_at)
    return data
