"""Query-string parameters shared by the JSON routes."""

from __future__ import annotations

from starlette.requests import Request

from tidegate.errors import InvalidRequestError

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def int_param(
    request: Request, name: str, *, minimum: int = INT64_MIN, maximum: int = INT64_MAX
) -> int | None:
    """The integer query parameter ``name``, None when absent; 400 when not an integer or out
    of ``minimum``..``maximum`` (by default a signed 64-bit integer, what every store column
    holds: a larger cursor or id was a 500 from the database driver)."""
    value = request.query_params.get(name)
    if value is None:
        return None
    try:
        number = int(value) if len(value) <= 24 else None
    except ValueError:
        number = None
    if number is None or not minimum <= number <= maximum:
        raise InvalidRequestError(
            f"Invalid value for '{name}': expected an integer from {minimum} to {maximum} "
            f"(got {value[:40]!r}).",
            param=name,
        )
    return number


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
