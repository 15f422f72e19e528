"""Staged rollouts, for the operator's admin keys only (a rollout moves every tenant's traffic).

    POST /admin/rollouts                      start: {"model", "candidate_pool", "steps":
                                              [5, 25, 100], "hold_s": 600, "gates": {...}}
    GET  /admin/rollouts                      newest first (?model=, ?state=, ?limit= 1-100)
    GET  /admin/rollouts/{id}                 with the current step's gate figures
    POST /admin/rollouts/{id}/pause|resume|abort|promote
    GET  /admin/rollouts/{id}/report          ?format=md (default) or html

HTTP only: the lifecycle is ``rollout.rollouts.RolloutService``; without rollouts
(``rollouts.enabled: false``) every route answers 404.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tidegate.api.admin import authorize_rollouts
from tidegate.api.admin_json import json_response, unix
from tidegate.api.input_guard import read_control_json
from tidegate.api.params import int_param
from tidegate.api.services import ServicesSlot
from tidegate.errors import InvalidRequestError
from tidegate.rollout.gates import GateResult
from tidegate.rollout.report import REPORT_FORMATS
from tidegate.rollout.rollouts import OPERATIONS, Operation, RolloutService, RolloutStatus
from tidegate.tenancy.actors import Actor

MAX_PAGE = 100
_BODY_FIELDS = frozenset({"model", "candidate_pool", "steps", "hold_s", "gates"})


def build_rollout_routes(services: ServicesSlot) -> list[BaseRoute]:
    endpoints = RolloutEndpoints(slot=services)
    return [
        Route("/admin/rollouts", endpoints.start, methods=["POST"]),
        Route("/admin/rollouts", endpoints.list, methods=["GET"]),
        Route("/admin/rollouts/{rollout_id}", endpoints.get, methods=["GET"]),
        Route("/admin/rollouts/{rollout_id}/report", endpoints.report, methods=["GET"]),
        *(
            Route(
                f"/admin/rollouts/{{rollout_id}}/{name}",
                endpoints.operation(name),
                methods=["POST"],
            )
            for name in OPERATIONS
        ),
    ]


class RolloutEndpoints:
    def __init__(self, *, slot: ServicesSlot) -> None:
        self._slot = slot

    async def start(self, request: Request) -> Response:
        rollouts, actor = await self._authorize(request)
        body = await read_control_json(request, self._slot.get().max_body_bytes)
        unknown = sorted(set(body) - _BODY_FIELDS)
        if unknown:
            raise InvalidRequestError(f"Unknown parameter: '{unknown[0]}'.", param=unknown[0])
        gates = body.get("gates")
        if gates is not None and not isinstance(gates, dict):
            raise InvalidRequestError("'gates' must be an object.", param="gates")
        info = await rollouts.start(
            model=_text(body, "model"),
            candidate_pool=_text(body, "candidate_pool"),
            steps=_steps(body.get("steps")),
            hold_s=_number(body, "hold_s"),
            gates=gates,
            actor=actor,
        )
        return json_response(rollout_json(RolloutStatus(info, None)), 201)

    async def list(self, request: Request) -> Response:
        rollouts, _ = await self._authorize(request)
        limit = int_param(request, "limit") or 20
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequestError(
                f"Invalid value for 'limit': use 1 to {MAX_PAGE}.", param="limit"
            )
        params = request.query_params
        infos = await rollouts.list(
            model=params.get("model"), state=params.get("state"), limit=limit
        )
        data = [rollout_json(RolloutStatus(info, None)) for info in infos]
        return json_response({"object": "list", "data": data})

    async def get(self, request: Request) -> Response:
        rollouts, _ = await self._authorize(request)
        return json_response(rollout_json(await rollouts.get(request.path_params["rollout_id"])))

    async def report(self, request: Request) -> Response:
        rollouts, _ = await self._authorize(request)
        format = request.query_params.get("format", "md")
        if format not in REPORT_FORMATS:
            raise InvalidRequestError("Invalid value for 'format': use md or html.", param="format")
        text = await rollouts.report(
            request.path_params["rollout_id"], format="html" if format == "html" else "md"
        )
        media = "text/html" if format == "html" else "text/markdown"
        return Response(text, media_type=media)

    def operation(self, name: Operation) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            rollouts, actor = await self._authorize(request)
            info = await rollouts.operate(request.path_params["rollout_id"], name, actor=actor)
            return json_response(rollout_json(RolloutStatus(info, None)))

        return handle

    async def _authorize(self, request: Request) -> tuple[RolloutService, Actor]:
        _, rollouts, actor = await authorize_rollouts(self._slot, request)
        return rollouts.rollouts, actor


def rollout_json(status: RolloutStatus) -> dict[str, Any]:
    info = status.rollout
    return {
        "id": info.id,
        "object": "rollout",
        "model": info.model,
        "stable_pool": info.stable_pool,
        "candidate_pool": info.candidate_pool,
        "steps": list(info.steps),
        "hold_s": info.hold_s,
        "gates": info.gates.to_dict(),
        "state": info.state,
        "step_index": info.step_index,
        "share": info.share,
        "step_started_at": unix(info.step_started_at),
        "reason": info.reason,
        "history": list(info.history),
        "created_at": unix(info.created_at),
        "created_by": info.created_by,
        "updated_at": unix(info.updated_at),
        "finished_at": unix(info.finished_at),
        "current_step": None if status.gate is None else gate_json(status.gate),
    }


def gate_json(result: GateResult) -> dict[str, Any]:
    return {
        "verdict": result.verdict,
        "failed_gate": result.gate,
        "reason": result.reason,
        "figures": result.figures,
    }


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidRequestError(f"Missing required parameter: '{name}' (a name).", param=name)
    return value


def _number(body: dict[str, Any], name: str) -> float:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequestError(f"'{name}' must be a number of seconds.", param=name)
    return float(value)


def _steps(value: Any) -> list[float]:
    if not isinstance(value, list) or not all(
        isinstance(step, int | float) and not isinstance(step, bool) for step in value
    ):
        raise InvalidRequestError(
            "'steps' must be a list of percentages, for example [5, 25, 100].", param="steps"
        )
    return [float(step) for step in value]
