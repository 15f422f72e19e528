"""Request bodies of the /admin/models/{model}/... routes (traffic and versions); no I/O.

Parsed by hand rather than by a schema so that each mistake gets a message naming the field
and showing the accepted shape. Unknown fields are rejected, so a typo is an error instead of
a silent no-op. Names and numbers are checked against the routing table by the services.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tidegate.protocol.requests import RequestValidationFailure

__all__ = ["ShadowBody", "TrafficUpdate", "VersionCreate", "parse_traffic", "parse_version"]

_WEIGHTS_SHAPE = (
    'an object like {"stable": 95, "candidate": 5} or a list like [["candidate", 5], '
    '["stable", 95]]'
)


@dataclass(frozen=True, slots=True)
class ShadowBody:
    pool: str | None
    """None: mirroring off."""
    sample: float = 0.0


@dataclass(frozen=True, slots=True)
class TrafficUpdate:
    weights: tuple[tuple[str, float], ...] | None
    stable_pool: str | None
    sticky_by: str | None
    shadow: ShadowBody | None
    """None: leave the shadow as it is (``"shadow": null`` in the body is ShadowBody(None))."""


@dataclass(frozen=True, slots=True)
class VersionCreate:
    pool: str
    source: str
    revision: str
    profile_hash: str


def parse_traffic(data: dict[str, Any]) -> TrafficUpdate:
    _only(data, ("weights", "stable_pool", "sticky_by", "shadow"))
    weights = None if data.get("weights") is None else _weights(data["weights"])
    stable_pool = _optional_text(data, "stable_pool")
    sticky_by = _optional_text(data, "sticky_by")
    if weights is None and (stable_pool is not None or sticky_by is not None):
        raise RequestValidationFailure(
            "stable_pool and sticky_by are set together with weights; send the weights too.",
            "weights",
        )
    shadow = _shadow(data["shadow"]) if "shadow" in data else None
    if weights is None and shadow is None:
        raise RequestValidationFailure(
            f"Nothing to change: send weights ({_WEIGHTS_SHAPE}), shadow "
            '({"pool": "candidate", "sample": 0.1}, or null to stop mirroring) or both.',
            None,
        )
    return TrafficUpdate(weights, stable_pool, sticky_by, shadow)


def parse_version(data: dict[str, Any]) -> VersionCreate:
    _only(data, ("pool", "source", "revision", "profile_hash"))
    pool = _optional_text(data, "pool")
    source = _optional_text(data, "source")
    for name, value in (("pool", pool), ("source", source)):
        if value is None:
            raise RequestValidationFailure(f"Missing required parameter: '{name}'.", name)
    assert pool is not None and source is not None
    return VersionCreate(
        pool=pool,
        source=source,
        revision=_optional_text(data, "revision") or "",
        profile_hash=_optional_text(data, "profile_hash") or "",
    )


def _only(data: dict[str, Any], fields: tuple[str, ...], prefix: str = "") -> None:
    for name in data:
        if name not in fields:
            raise RequestValidationFailure(
                f"Unknown parameter: '{prefix}{name}'. Accepted: {', '.join(fields)}.",
                prefix + name,
            )


def _optional_text(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None or isinstance(value, str):
        return value
    raise RequestValidationFailure(f"Invalid value for '{name}': expected a string.", name)


def _weights(value: object) -> tuple[tuple[str, float], ...]:
    if isinstance(value, dict):
        pairs: list[Any] = list(value.items())
    elif isinstance(value, list):
        pairs = value
    else:
        raise RequestValidationFailure(f"'weights' must be {_WEIGHTS_SHAPE}.", "weights")
    weights: list[tuple[str, float]] = []
    for pair in pairs:
        if not (isinstance(pair, list | tuple) and len(pair) == 2 and isinstance(pair[0], str)):
            raise RequestValidationFailure(
                f"Each weight is a pool name and a number: 'weights' must be {_WEIGHTS_SHAPE}.",
                "weights",
            )
        weights.append((pair[0], _number(pair[1], f"the weight of pool '{pair[0]}'", "weights")))
    return tuple(weights)


def _shadow(value: object) -> ShadowBody:
    if value is None:
        return ShadowBody(None)
    if not isinstance(value, dict):
        raise RequestValidationFailure(
            '\'shadow\' must be {"pool": "candidate", "sample": 0.1}, or null to stop mirroring.',
            "shadow",
        )
    _only(value, ("pool", "sample"), "shadow.")
    pool = value.get("pool")
    if not isinstance(pool, str):
        raise RequestValidationFailure(
            "'shadow.pool' must name the pool to mirror to (a string).", "shadow.pool"
        )
    if "sample" not in value:
        raise RequestValidationFailure(
            "Missing required parameter: 'shadow.sample' (the share mirrored, 0 to 1).",
            "shadow.sample",
        )
    return ShadowBody(pool, _number(value["sample"], "'shadow.sample'", "shadow.sample"))


def _number(value: object, what: str, param: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestValidationFailure(f"Invalid value for {what}: expected a number.", param)
    return float(value)
