"""The gateway's route table and its framework-level error handlers."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route

from tidegate import __version__
from tidegate.api.admin import build_admin_routes
from tidegate.api.admin_adapters import build_adapter_routes
from tidegate.api.admin_rollouts import build_rollout_routes
from tidegate.api.admin_shadow import build_shadow_routes
from tidegate.api.admin_traffic import build_traffic_routes
from tidegate.api.admin_usage import build_usage_routes
from tidegate.api.asgi import RequestIds
from tidegate.api.batches import build_batch_routes
from tidegate.api.completions import CompletionEndpoint
from tidegate.api.errors import (
    REQUEST_ID_KEY,
    error_body,
    error_response,
    internal_error_response,
    log_internal,
)
from tidegate.api.files import build_file_routes
from tidegate.api.openapi import OpenApiRoute
from tidegate.api.services import ServicesSlot
from tidegate.api.system import SystemRoutes
from tidegate.console.routes import build_console_routes
from tidegate.errors import TidegateError
from tidegate.protocol.endpoints import PUBLIC_PATHS


def build_routes(
    services: ServicesSlot, ids: RequestIds, *, console: bool = True
) -> list[BaseRoute]:
    """``console``: serve the web console at /console (``console.enabled``)."""
    system = SystemRoutes(services=services)
    return [
        *(
            Route(
                path, CompletionEndpoint(route=kind, services=services, ids=ids), methods=["POST"]
            )
            for kind, path in PUBLIC_PATHS.items()
        ),
        Route("/v1/models", system.models, methods=["GET"]),
        Route("/healthz", system.healthz, methods=["GET"]),
        Route("/readyz", system.readyz, methods=["GET"]),
        Route("/metrics", system.metrics, methods=["GET"]),
        Route("/openapi.json", OpenApiRoute(version=__version__).serve, methods=["GET"]),
        *build_file_routes(services),
        *build_batch_routes(services),
        *build_admin_routes(services),
        *build_usage_routes(services),
        *build_traffic_routes(services),
        *build_adapter_routes(services),
        *build_shadow_routes(services),
        *build_rollout_routes(services),
        *build_console_routes(enabled=console),
    ]


async def tidegate_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TidegateError)
    if exc.error_type == "internal_error":  # a StoreError, or a bug that raised one
        log_internal(exc, request.scope.get(REQUEST_ID_KEY))
    status, body, headers = error_response(exc)
    response = Response(body, status_code=status, media_type="application/json")
    for name, value in headers:
        response.headers[name.decode()] = value.decode()
    return response


async def internal_error_handler(request: Request, exc: Exception) -> Response:
    """Any other exception: a bug. Logged, and answered in the OpenAI format (Starlette's
    default is a plain-text 500)."""
    request_id = request.scope.get(REQUEST_ID_KEY)
    log_internal(exc, request_id)
    status, body, _ = internal_error_response(request_id or "(unknown)")
    return Response(body, status_code=status, media_type="application/json")


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = (
            f"Unknown path {request.url.path}. The OpenAI-compatible routes are "
            "/v1/chat/completions, /v1/completions, /v1/models, /v1/files and /v1/batches."
        )
        error_type = "not_found_error"
    elif exc.status_code == 405:
        allowed = _allowed_methods(request)
        message = f"Method {request.method} is not allowed on {request.url.path}."
        if allowed:
            message += f" Use {' or '.join(allowed)}."
        error_type = "invalid_request_error"
    else:
        message, error_type = str(exc.detail), "invalid_request_error"
    response = Response(
        error_body(message, error_type, None, None),
        status_code=exc.status_code,
        media_type="application/json",
    )
    if exc.status_code == 405 and allowed:
        response.headers["allow"] = ", ".join(allowed)
    return response


def _allowed_methods(request: Request) -> list[str]:
    """The methods the app's routes accept on this path (Starlette names them only per route)."""
    methods: set[str] = set()
    for route in getattr(request.app, "routes", ()):
        match, _ = route.matches({**request.scope, "method": "GET"})
        route_methods = getattr(route, "methods", None)
        if match != Match.NONE and route_methods:
            methods |= set(route_methods)
    methods.discard("HEAD")
    return sorted(methods)
