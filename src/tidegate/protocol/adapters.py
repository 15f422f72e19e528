"""The body of ``POST /admin/adapters``: its shape and the form of every field (no I/O).

The names' clashes with the routing table are the adapter service's to check; here each field
is a string of the right form, or the answer is a 400 naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tidegate.config.adapters import (
    ADAPTER_NAME_PATTERN,
    ADAPTER_VERSION_PATTERN,
    HUB_ID_PATTERN,
)
from tidegate.protocol.requests import RequestValidationFailure

_NAME = re.compile(ADAPTER_NAME_PATTERN)
_VERSION = re.compile(ADAPTER_VERSION_PATTERN)
_HUB_ID = re.compile(HUB_ID_PATTERN)
_FIELDS = ("name", "version", "pool", "path", "hub_id")
MAX_PATH = 1000


@dataclass(frozen=True, slots=True)
class AdapterCreate:
    name: str
    version: str
    pool: str | None
    """None: the main local pool, else the only pool."""
    source: str
    """The directory (absolute) or hub id."""


def parse_adapter(data: dict[str, Any]) -> AdapterCreate:
    for key in data:
        if key not in _FIELDS:
            raise RequestValidationFailure(
                f"Unknown parameter: '{key}'. Accepted: {', '.join(_FIELDS)}.", key
            )
    name = _text(data, "name")
    if name is None:
        raise RequestValidationFailure("Missing required parameter: 'name'.", "name")
    check_name(name)
    version = _text(data, "version") or ""
    if version and not _VERSION.fullmatch(version):
        raise RequestValidationFailure(
            "'version' must be 1 to 31 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit.",
            "version",
        )
    path, hub_id = _text(data, "path"), _text(data, "hub_id")
    if bool(path) == bool(hub_id):
        raise RequestValidationFailure(
            "Give exactly one of 'path' (the adapter directory, as the engines see it) and "
            "'hub_id' (a Hugging Face id such as org/adapter).",
            "path",
        )
    if path:
        check_path(path)
    elif hub_id and not _HUB_ID.fullmatch(hub_id):
        raise RequestValidationFailure("'hub_id' must look like ORG/NAME.", "hub_id")
    return AdapterCreate(name, version, _text(data, "pool"), path or hub_id or "")


def check_name(name: str, param: str = "name") -> str:
    if not _NAME.fullmatch(name):
        raise RequestValidationFailure(
            f"'{param}' must be 1 to 63 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit (it becomes a model and pool name).",
            param,
        )
    return name


def check_path(path: str) -> str:
    if len(path) > MAX_PATH or not path.startswith("/") or not path.isprintable():
        raise RequestValidationFailure(
            f"'path' must be an absolute directory path of at most {MAX_PATH} printable "
            "characters.",
            "path",
        )
    if ".." in path.split("/"):
        raise RequestValidationFailure("'path' may not contain '..' parts.", "path")
    return path


def _text(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None or isinstance(value, str):
        return value
    raise RequestValidationFailure(f"Invalid value for '{name}': expected a string.", name)
