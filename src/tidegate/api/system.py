"""GET /v1/models, /healthz, /readyz and /metrics.

/metrics names tenants and counts their requests, so on the API port it is served only to a
bearer of ``server.metrics_token`` or an operator's admin key; the metrics listener
(``observability.metrics_listener``) serves it without a token where the operator binds it.
/healthz and /readyz say nothing about tenants or keys.
"""

from __future__ import annotations

import asyncio
import hmac
import time

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from tidegate.api.asgi import bearer_token
from tidegate.api.services import ApiServices, ServicesSlot
from tidegate.errors import AuthenticationError, PermissionDeniedError
from tidegate.store.models import SYSTEM_TENANT_ID


def _json(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


class SystemRoutes:
    def __init__(self, *, services: ServicesSlot) -> None:
        self._slot = services
        self._created = int(time.time())

    async def models(self, request: Request) -> Response:
        services = self._slot.get()
        principal = await services.keys.authenticate(bearer_token(request.scope))
        # Only what this key may use: other tenants' models are none of its business.
        allowed = [
            names
            for names in (principal.tenant.allowed_models, principal.key.allowed_models)
            if names is not None
        ]
        data = [
            {"id": model, "object": "model", "created": self._created, "owned_by": "tidegate"}
            for model in services.routing.models()
            if all(model in names for names in allowed)
        ]
        return _json({"object": "list", "data": data})

    async def healthz(self, request: Request) -> Response:
        return _json({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """Ready when the store and the limit store answer and every model has at least one
        ready replica. The body names each component's state (no URL, tenant or key)."""
        problems: list[str] = []
        try:
            services = self._slot.get()
        except Exception:
            return _json({"status": "starting", "problems": ["gateway starting"]}, 503)
        components = await services.dependencies.check()
        for name, state in components.items():
            if state["state"] != "up":
                problems.append(f"{name} unreachable: {state['error']}")
        models = {}
        for model in services.routing.models():
            ready = services.routing.model_ready(model)
            models[model] = ready
            if not ready:
                problems.append(f"no ready replica for model '{model}'")
        if not models:
            problems.append("no model is configured")
        status = 200 if not problems else 503
        body: dict[str, object] = {
            "status": "ready" if status == 200 else "not_ready",
            "components": components,
            "models": models,
        }
        if problems:
            body["problems"] = problems
        return _json(body, status)

    async def metrics(self, request: Request) -> Response:
        services = self._slot.get()
        await _check_metrics_access(services, bearer_token(request.scope))
        # Rendered off the loop (see metrics_listener): a scrape must not stall requests.
        body = await asyncio.to_thread(generate_latest, services.metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)


_METRICS_HOW = (
    "/metrics on this port lists tenants, so it needs 'Authorization: Bearer <token>' with "
    "server.metrics_token or an operator's admin key. Prometheus can scrape the metrics "
    "listener instead (server.metrics_port), which needs no token."
)


async def _check_metrics_access(services: ApiServices, token: str) -> None:
    if not token:
        raise AuthenticationError(
            f"You didn't provide a token. {_METRICS_HOW}", code="metrics_token_required"
        )
    expected = services.metrics_token
    if expected is not None and hmac.compare_digest(token.encode(), expected.encode()):
        return
    try:
        principal = await services.keys.authenticate(token)
    except AuthenticationError:
        raise AuthenticationError(
            f"The token is neither server.metrics_token nor a valid key. {_METRICS_HOW}",
            code="invalid_metrics_token",
        ) from None
    if principal.role != "admin" or principal.tenant_id != SYSTEM_TENANT_ID:
        raise PermissionDeniedError(
            f"This key is not an operator's admin key. {_METRICS_HOW}",
            code="metrics_token_required",
        )
