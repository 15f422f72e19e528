"""Pools, model routes and rules, health checking and ejection."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tidegate.config.section import Section


class PoolConfig(Section):
    """Settings of one pool of replicas (pools not listed use the defaults)."""

    name: str
    """The pool's name: an upstream's `pool` (or `model`), or a local pool's (the main one's
    engines.served_model_name, or an engines.pools name)."""
    balancer: Literal["least_outstanding", "round_robin", "prefix_affinity"] = "least_outstanding"
    """least_outstanding: power-of-two choices on in-flight requests. round_robin: in turn.
    prefix_affinity: requests sharing a session id (x-tidegate-session-id) or leading prompt
    content go to the same replica (consistent hashing with bounded load), so its KV prefix
    cache is reused; requests without either are balanced like least_outstanding."""
    affinity_load_factor: float = Field(default=1.25, gt=1.0)
    """prefix_affinity: no replica takes more than this times the pool's mean in-flight load
    (plus one); a request whose affine replica is that full moves to the next one on the ring."""
    affinity_prefix_chars: int = Field(default=2048, ge=16)
    """prefix_affinity: how many leading characters of the prompt (system and first messages)
    are hashed into the affinity key."""
    engine_signals: bool = False
    """Count requests waiting in each engine's own queue (from its /metrics) as load, and avoid
    replicas whose KV cache is nearly full while others have room (local engines only)."""
    circuit_breaker: bool | None = None
    """Stop sending to the whole pool for breaker_open_s after breaker_failures failures in a
    row, then let one probe through. None: on for remote pools, off for local engines."""


class RouteRule(Section):
    """A rule sends matching requests to its own pool chain; all its conditions must hold."""

    pools: list[str] = Field(min_length=1)
    """The pool chain for matching requests: the first, then the rest in order as fallbacks."""
    tiers: list[str] = Field(default_factory=list)
    """Tenant tiers that match (interactive, batch, internal ...). Empty: any."""
    min_prompt_tokens: int | None = None
    """Matches prompts of at least this many tokens (counted by the model's tokenizer)."""
    max_prompt_tokens: int | None = None
    """Matches prompts of at most this many tokens."""
    response_format: list[Literal["text", "json_object", "json_schema"]] = Field(
        default_factory=list
    )
    """Matches requests whose response_format type is one of these. Empty: any."""
    quality: list[str] = Field(default_factory=list)
    """Matches requests whose x-tidegate-quality header is one of these. Empty: any."""


class ModelRoute(Section):
    """How requests for one public model name reach pools."""

    model: str
    """The public model name clients send."""
    pools: list[str] = Field(min_length=1)
    """The default pool chain: the first pool serves; the next ones take over, in order, when
    one has no healthy replica, its breaker is open, its queue is full, it fails before the
    first byte, or (with spillover) its predicted wait breaks the class's TTFT target."""
    rules: list[RouteRule] = Field(default_factory=list)
    """Checked in order; the first rule that matches picks the chain, else `pools` does."""
    spillover: bool = False
    """Send a request to the next pool when its predicted queue wait here would exceed its
    class's ttft_target_s (baseline on local GPUs, overflow to a managed API)."""


class HealthConfig(Section):
    """Active health checks, passive outlier ejection, circuit breaking and retries."""

    interval_s: float = Field(default=0.5, gt=0)
    """Seconds between active checks of each replica with a health_check_path."""
    timeout_s: float = Field(default=0.5, gt=0)
    """A check slower than this fails."""
    unhealthy_threshold: int = Field(default=2, ge=1)
    """Failed checks in a row that take a replica out of rotation."""
    healthy_threshold: int = Field(default=2, ge=1)
    """Passed checks in a row that bring it back."""
    consecutive_failures: int = Field(default=5, ge=1)
    """Request failures in a row (5xx, timeouts, dropped streams) that eject a replica. A
    refused connection ejects at once."""
    base_ejection_s: float = Field(default=5.0, gt=0)
    """First ejection time; it doubles with each ejection that follows without a success."""
    max_ejection_s: float = Field(default=120.0, gt=0)
    """Longest ejection."""
    max_ejected_share: float = Field(default=0.5, gt=0, le=1.0)
    """At most this share of a pool's replicas is ejected at once (at least one may be)."""
    retry_budget_ratio: float = Field(default=0.2, ge=0.0, le=1.0)
    """Retries (before the first byte reached the client only) may add at most this share of
    extra upstream requests."""
    breaker_failures: int = Field(default=5, ge=1)
    """Failures in a row of a pool that open its circuit breaker."""
    breaker_open_s: float = Field(default=30.0, gt=0)
    """How long an open breaker keeps traffic away before one probe request is let through."""


class RoutingConfig(Section):
    """Pools, routes from public model names to pool chains, and replica health."""

    pools: list[PoolConfig] = Field(default_factory=list)
    """Per-pool balancing and circuit breaking."""
    routes: list[ModelRoute] = Field(default_factory=list)
    """Public model names served by pool chains. A model name with no route is served by the
    pools of the upstreams (and local engines) that name it, in config order."""
    health: HealthConfig = Field(default_factory=HealthConfig)
    """Health checks, ejection, circuit breaking and the retry budget."""
