"""Adds ``x-request-id`` to responses of routes that do not set it themselves.

The completion routes set the header on their own (they also log the id), so they pass
straight through without a wrapped ``send``.
"""

from __future__ import annotations

from tidegate.api.asgi import Message, Receive, RequestIds, Scope, Send, request_id

SELF_IDENTIFYING_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})


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
        rid = request_id(scope, self._ids).encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid)]
            await send(message)

        await app(scope, receive, send_with_id)
