"""What a benchmark run is pointed at: targets (with prices), tenants and SLOs.

Target strings on the command line are either ``[NAME=]URL`` or comma-separated ``key=value``
pairs: ``name=vllm,url=http://h:8000/v1,model=m,key=K,input_price=0.15,output_price=0.6,
cached_input_price=0.075,gpu_hour=2.5``. Prices are USD per million tokens; ``gpu_hour`` is the
accelerator cost per hour of a self-hosted target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass(frozen=True, kw_only=True)
class Prices:
    input_per_m: float | None = None
    cached_input_per_m: float | None = None
    output_per_m: float | None = None
    accelerator_per_hour: float | None = None

    @property
    def managed(self) -> bool:
        return self.input_per_m is not None or self.output_per_m is not None


@dataclass(frozen=True, kw_only=True)
class Target:
    name: str
    url: str
    """Base URL ending in /v1."""
    model: str | None = None
    """None: the first model that GET /v1/models lists."""
    key: str | None = None
    prices: Prices = field(default_factory=Prices)


@dataclass(frozen=True, kw_only=True)
class Tenant:
    name: str
    key: str | None = None
    """Sent instead of the target's key; None keeps the target's."""
    weight: float = 1.0
    priority: str | None = None
    """Sent in the priority header when set."""


@dataclass(frozen=True, kw_only=True)
class Slo:
    """A request is good when it meets every bound that is set (milliseconds)."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2el_ms: float | None = None

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.ttft_ms, self.tpot_ms, self.e2el_ms))


_PRICE_KEYS = {
    "input_price": "input_per_m",
    "cached_input_price": "cached_input_per_m",
    "output_price": "output_per_m",
    "gpu_hour": "accelerator_per_hour",
}


def parse_target(spec: str, *, default_model: str | None, default_key: str | None) -> Target:
    if "url=" not in spec:
        name, sep, url = spec.partition("=")
        if not sep or name.startswith(("http://", "https://")):
            name, url = "", spec
        fields = {"url": url, "name": name}
    else:
        fields = {}
        for part in spec.split(","):
            key, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"target field {part!r} is not key=value")
            fields[key.strip()] = value.strip()
    url = fields.pop("url", "").rstrip("/")
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"target URL must start with http:// or https://, got {url!r}")
    name = fields.pop("name", "") or urlsplit(url).netloc
    prices: dict[str, float] = {}
    for cli_key, attr in _PRICE_KEYS.items():
        if cli_key in fields:
            prices[attr] = float(fields.pop(cli_key))
    model = fields.pop("model", "") or default_model
    api_key = fields.pop("key", "") or default_key
    if fields:
        raise ValueError(f"unknown target fields: {', '.join(sorted(fields))}")
    return Target(name=name, url=url, model=model, key=api_key, prices=Prices(**prices))


def parse_tenant(spec: str) -> Tenant:
    """``NAME[:KEY[:WEIGHT[:PRIORITY]]]``; an empty KEY keeps the target's key."""
    parts = spec.split(":")
    if not parts[0] or len(parts) > 4:
        raise ValueError(f"tenant must be NAME[:KEY[:WEIGHT[:PRIORITY]]], got {spec!r}")
    weight = float(parts[2]) if len(parts) > 2 and parts[2] else 1.0
    if weight <= 0:
        raise ValueError(f"tenant weight must be positive, got {weight}")
    return Tenant(
        name=parts[0],
        key=parts[1] if len(parts) > 1 and parts[1] else None,
        weight=weight,
        priority=parts[3] if len(parts) > 3 and parts[3] else None,
    )
