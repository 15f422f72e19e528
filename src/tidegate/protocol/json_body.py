"""Parsing a request's JSON body: the one function every route that takes a JSON object uses,
so a malformed body gets the same 400 everywhere."""

from __future__ import annotations

from typing import Any

import orjson

from tidegate.errors import InvalidRequestError

__all__ = ["parse_json_object"]


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; InvalidRequestError (400) when it is not valid JSON or not an
    object."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidRequestError(
            f"The request body is not valid JSON ({error}). Send a JSON object with "
            "Content-Type: application/json."
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequestError(
            f"The request body must be a JSON object, not a JSON {type(data).__name__}."
        )
    return data
