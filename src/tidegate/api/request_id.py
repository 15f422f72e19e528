"""Adds the request id headers to responses of routes that do not set them themselves.

The completion routes set them on their own (they also log and meter the id), so they pass
straight through without a wrapped ``send``. See ``asgi.request_id_headers`` for what the two
headers hold.
"""

from __future__ import annotations

from tidegate.api.asgi import (
    Message,
    Receive,
    RequestIds,
    Scope,
    Send,
    client_request_id,
    request_id_headers,
)
from tidegate.api.errors import REQUEST_ID_KEY
from tidegate.protocol.endpoints import PUBLIC_PATHS

SELF_IDENTIFYING_PATHS = frozenset(PUBLIC_PATHS.values())


class RequestIdMiddleware:
    def __init__(self, app: object, ids: RequestIds) -> None:
        self._app = app
        self._ids = ids

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app
        assert callable(app)
        if scope["type"] != "http" or scope["path"] in SELF_IDENTIFYING_PATHS:
            await app(scope, receive, send)
            return
        own = self._ids.next()
        scope[REQUEST_ID_KEY] = own  # for the log line of a 500 (api.errors.log_internal)
        added = request_id_headers(own, client_request_id(scope))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *added]
            await send(message)

        await app(scope, receive, send_with_id)
