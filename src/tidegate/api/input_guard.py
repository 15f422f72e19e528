"""Path and query parameters, and the JSON bodies of the admin and batch routes, checked once
before any route reads them.

Every route of the app is wrapped (``guard_routes``), so a new route is covered without doing
anything; the admin and batch routes read their bodies with ``read_control_json``. What is
refused is what no id, name or cursor ever holds and a store cannot take: a NUL character
(PostgreSQL's text types refuse it, which surfaced as a 500). The 400 names the parameter (a
dotted path into a body), like every other validation error. Completion bodies are not checked
here: a NUL inside a prompt is the client's business and goes to the engine as sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from tidegate.api.asgi import Receive, Scope, Send, read_control_body
from tidegate.errors import InvalidRequestError
from tidegate.protocol.json_body import parse_json_object
from tidegate.protocol.requests import RequestValidationFailure

__all__ = ["check_params", "find_nul", "guard_routes", "read_control_json", "read_json_as"]

T = TypeVar("T")


def _refuse(name: str, where: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"Invalid value for '{name}': the {where} parameter contains a NUL character "
        "(\\u0000 or %00), which no id, name or cursor holds. Remove it.",
        param=name,
        code="invalid_parameter",
    )


def find_nul(value: Any) -> str | None:
    """The dotted path of the first string (object key or value) holding a NUL character in
    a parsed JSON value; None when there is none. Iterative: depth costs no stack."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        node, at = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return at or None
        elif isinstance(node, dict):
            for key, child in node.items():
                where = f"{at}.{key}" if at else str(key)
                if "\x00" in key:
                    return where.replace("\x00", "")
                stack.append((child, where))
        elif isinstance(node, list):
            stack.extend(
                (child, f"{at}.{index}" if at else str(index)) for index, child in enumerate(node)
            )
    return None


async def read_control_json(request: Request, max_body_bytes: int) -> dict[str, Any]:
    """The JSON object body of an admin or batch route: capped while it is read
    (``read_control_body``), and with no NUL character in any string."""
    data = parse_json_object(
        await read_control_body(request.scope, request.receive, max_body_bytes)
    )
    at = find_nul(data)
    if at is not None:
        raise _refuse(at, "body")
    return data


async def read_json_as(
    request: Request, max_body_bytes: int, parse: Callable[[dict[str, Any]], T]
) -> T:
    """``read_control_json``, then ``parse`` (a ``protocol`` parser): the one way an admin route
    turns its body into a typed request, with one 400 for whatever ``parse`` refuses."""
    data = await read_control_json(request, max_body_bytes)
    try:
        return parse(data)
    except RequestValidationFailure as failure:
        raise InvalidRequestError(failure.message, param=failure.param) from None


def check_params(scope: Scope) -> None:
    """Raise InvalidRequestError for a path or query parameter holding a NUL character."""
    for name, value in scope.get("path_params", {}).items():
        if isinstance(value, str) and "\x00" in value:
            raise _refuse(name, "path")
    query: bytes = scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                raise _refuse(name.replace("\x00", ""), "query")


class _Guarded:
    __slots__ = ("_app",)

    def __init__(self, app: object) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        check_params(scope)  # path_params are in the scope once the route matched
        app = self._app
        assert callable(app)
        await app(scope, receive, send)


def guard_routes(routes: list[BaseRoute]) -> list[BaseRoute]:
    """Wrap each route's app in the parameter check (in place; returns ``routes``)."""
    for route in routes:
        if isinstance(route, Route):
            route.app = _Guarded(route.app)
    return routes
