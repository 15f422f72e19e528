"""Request bodies of the /admin API, validated before the gateway sees them; no I/O.

Settings stay plain JSON objects here: the gateway validates them against its policy schema
(and, for updates, merges them into the stored document first). Unknown top-level fields are
rejected, so a typo is an error instead of a silent no-op.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tidegate.protocol.requests import RequestValidationFailure

__all__ = ["KeyCreate", "TenantCreate", "TenantUpdate", "parse_admin_body"]

Body = TypeVar("Body", bound="_Strict")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TenantCreate(_Strict):
    name: str = Field(min_length=1, max_length=200)
    tier: str = "interactive"
    settings: dict[str, Any] = Field(default_factory=dict)


class TenantUpdate(_Strict):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    tier: str | None = None
    settings: dict[str, Any] | None = None
    """A JSON merge patch over the stored settings: null resets a field to its default."""


class KeyCreate(_Strict):
    name: str = Field(min_length=1, max_length=200)
    role: Literal["admin", "member"] = "member"
    tenant_id: str | None = None
    """Only the operator may name another tenant; default: the caller's own tenant."""
    expires_in_days: int | None = Field(default=None, ge=1, le=36_500)
    settings: dict[str, Any] | None = None


def parse_admin_body(model: type[Body], data: dict[str, Any]) -> Body:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        loc = ".".join(str(part) for part in first["loc"]) or None
        if first["type"] == "missing":
            raise RequestValidationFailure(f"Missing required parameter: '{loc}'.", loc) from None
        if first["type"] == "extra_forbidden":
            raise RequestValidationFailure(f"Unknown parameter: '{loc}'.", loc) from None
        raise RequestValidationFailure(
            f"Invalid value for '{loc}': {first['msg'].rstrip('.')}.", loc
        ) from None
