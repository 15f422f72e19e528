"""Query-string parameters shared by the JSON routes."""

from __future__ import annotations

from starlette.requests import Request

from tidegate.errors import InvalidRequestError


def int_param(request: Request, name: str) -> int | None:
    """The integer query parameter ``name``, None when absent; 400 when not an integer."""
    value = request.query_params.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidRequestError(
            f"Invalid value for '{name}': expected an integer.", param=name
        ) from None
