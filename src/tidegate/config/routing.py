"""Pools, model routes and rules, health checking and ejection."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from tidegate.config.section import Section

PoolSelection = Literal["order", "cheapest"]
"""How a chain's first pool is chosen: in config order, or the cheapest meeting the target."""


class PoolCost(Section):
    """What one request on a pool costs, for routes with ``select: cheapest``. Set either
    pricing_model (a managed API, paid per token) or accelerator_per_hour and
    output_throughput (self-hosted capacity, paid per hour)."""

    pricing_model: str | None = None
    """Managed API: the `pricing` entry its tokens are paid at (prompt tokens at
    input_per_million, completion tokens at output_per_million)."""
    accelerator_per_hour: float | None = Field(default=None, gt=0)
    """Self-hosted: USD per hour of the pool's accelerators (`tidegate bench`'s gpu_hour)."""
    output_throughput: float | None = Field(default=None, gt=0)
    """Self-hosted: output tokens per second the pool sustains (`tidegate bench`'s
    output_throughput, tok/s). A completion token costs accelerator_per_hour / 3600 /
    output_throughput, the bench's per_million_output_tokens_usd / 1e6."""
    bench_result: str | None = None
    """Self-hosted: a `tidegate bench run` JSON result (a path, absolute or from the working
    directory, read at config load) that gives output_throughput, and accelerator_per_hour
    when unset (from the target's per_million_output_tokens_usd, if it ran with gpu_hour)."""
    bench_target: str | None = None
    """The bench_result target to read (its name). None: the only one."""
    bench_run: str | None = None
    """The bench_result run to read (its label, for example "c=10"). None: the last."""

    @model_validator(mode="before")
    @classmethod
    def _from_bench(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data.get("bench_result"):
            return data
        from tidegate.config.bench_result import bench_figures

        throughput, per_hour = bench_figures(
            str(data["bench_result"]), target=data.get("bench_target"), run=data.get("bench_run")
        )
        filled = {**data}
        filled.setdefault("output_throughput", throughput)
        if per_hour is not None:
            filled.setdefault("accelerator_per_hour", per_hour)
        return filled

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        hosted = self.accelerator_per_hour is not None or self.output_throughput is not None
        if self.pricing_model is not None and hosted:
            raise ValueError(
                "set either pricing_model (a managed API) or accelerator_per_hour and "
                "output_throughput (self-hosted), not both"
            )
        if self.pricing_model is None and (
            self.accelerator_per_hour is None or self.output_throughput is None
        ):
            raise ValueError(
                "set pricing_model (a managed API), or both accelerator_per_hour and "
                "output_throughput (self-hosted)"
            )
        return self


class TimeWindow(Section):
    """When a rule applies: a five-field cron expression read on a time zone's wall clock."""

    cron: str
    """minute hour day-of-month month day-of-week, as cron reads them: "* 9-17 * * 1-5" is
    weekdays from 09:00 to 17:59. A request matches when the minute it arrives in does."""
    timezone: str = "UTC"
    """An IANA time zone (Europe/Berlin): the window follows its daylight-saving changes."""

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from croniter import croniter  # here: only configs with a window pay its import

        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(
                f"{value!r} is not a five-field cron expression (minute hour day-of-month "
                'month day-of-week, for example "* 9-17 * * 1-5")'
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (Europe/Berlin, UTC)") from None
        return value


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
    cost: PoolCost | None = None
    """What a request here costs, for routes with `select: cheapest` (required there)."""
    expected_ttft_s: float = Field(default=0.0, ge=0)
    """Time to first token once a request has a slot (`tidegate bench`'s TTFT p50 of the
    pool): with the scheduler's predicted queue wait, the predicted TTFT `select: cheapest`
    holds against the class's ttft_target_s."""


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
    window: TimeWindow | None = None
    """Matches requests arriving within this time window. None: at any time."""
    select: PoolSelection | None = None
    """How the rule's chain picks its first pool (see the route's select). None: the route's."""


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
    select: PoolSelection = "order"
    """order: the chain's pools in config order. cheapest: the cheapest pool (routing.pools
    cost) whose predicted TTFT (queue wait + expected_ttft_s) meets the class's
    ttft_target_s goes first, the others follow as fallbacks; when none meets it, the one with
    the lowest predicted TTFT."""
    expected_completion_tokens: int = Field(default=256, ge=1)
    """select: cheapest: the completion tokens a request is priced at (a request with a lower
    max_tokens at that)."""


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

    @model_validator(mode="after")
    def _cheapest_pools_priced(self) -> Self:
        priced = {pool.name for pool in self.pools if pool.cost is not None}
        for r, route in enumerate(self.routes):
            chains = [(f"routes[{r}]", route.select, route.pools)]
            chains += [
                (f"routes[{r}].rules[{i}]", rule.select or route.select, rule.pools)
                for i, rule in enumerate(route.rules)
            ]
            for where, select, pools in chains:
                missing = [name for name in pools if name not in priced]
                if select == "cheapest" and missing:
                    raise ValueError(
                        f"routing.{where} selects the cheapest pool, but pools "
                        f"{', '.join(missing)} have no routing.pools entry with a cost"
                    )
        return self


def check_pool_prices(routing: RoutingConfig, pricing: Mapping[str, object]) -> None:
    """A pool's cost.pricing_model must name a `pricing` entry (raises ValueError)."""
    for index, pool in enumerate(routing.pools):
        model = pool.cost.pricing_model if pool.cost is not None else None
        if model is not None and model not in pricing:
            known = ", ".join(sorted(pricing)) or "none"
            raise ValueError(
                f"routing.pools[{index}].cost.pricing_model: {model!r} is not in `pricing` "
                f"(priced models: {known})"
            )
