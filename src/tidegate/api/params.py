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


DEFAULT_PAGE = 20
MAX_PAGE = 100


def page_limit(request: Request) -> int:
    """A list's ``limit`` query parameter: 1 to MAX_PAGE, DEFAULT_PAGE when absent."""
    value = int_param(request, "limit")
    if value is None:
        return DEFAULT_PAGE
    if not 1 <= value <= MAX_PAGE:
        raise InvalidRequestError(
            f"Invalid value for 'limit': use 1 to {MAX_PAGE} (got {value}).", param="limit"
        )
    return value
