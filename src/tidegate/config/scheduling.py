"""The gateway's scheduler: priority classes, fair share and cluster admission."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tidegate.config.section import Section


class QueueClassConfig(Section):
    """How one priority class waits in the gateway's per-pool queue."""

    max_queue_depth: int = Field(default=256, ge=0)
    """Most requests of this class that wait per pool; one more gets 429 with Retry-After at
    once (0: never queue, refuse when the pool is full)."""
    queue_timeout_s: float = Field(default=30.0, gt=0)
    """Longest a request of this class waits for a slot before it gets 503 with Retry-After."""
    ttft_target_s: float | None = None
    """The class's time-to-first-token target. On routes with spillover, a request whose
    predicted queue wait in a pool would exceed it goes to the next pool of its chain instead.
    None: this class never spills over."""


class ClusterConfig(Section):
    """How gateway replicas share each pool's capacity (README: Scaling out)."""

    mode: Literal["auto", "redis", "off"] = "auto"
    """auto: shared through Redis (limits.redis_url and key_prefix) when limits.backend is
    redis, else off. redis: always shared. off: this gateway admits the whole capacity of each
    pool, as one gateway alone should."""
    heartbeat_s: float = Field(default=0.5, gt=0)
    """Seconds between syncs with Redis (one round trip for all pools): how fast shares follow
    members joining and leaving."""
    member_ttl_s: float = Field(default=3.0, gt=0)
    """A gateway that has not synced for this long (killed, partitioned) loses its membership,
    and its slots go to the others. At least twice heartbeat_s."""
    fallback_members: int = Field(default=3, ge=1)
    """With Redis unreachable before any sync succeeded, the capacity is divided by this many
    gateways (afterwards: by the member count last seen)."""
    timeout_s: float = Field(default=1.0, gt=0)
    """Longest a sync waits for Redis before the gateway falls back to a conservative share."""

    @model_validator(mode="after")
    def _ttl_covers_heartbeats(self) -> ClusterConfig:
        if self.member_ttl_s < 2 * self.heartbeat_s:
            raise ValueError(
                f"scheduling.cluster.member_ttl_s ({self.member_ttl_s:g}) must be at least twice "
                f"heartbeat_s ({self.heartbeat_s:g}), or live gateways would lose their share"
            )
        return self


class SchedulingConfig(Section):
    """The gateway's scheduler: per-pool admission by replica capacity, priority classes and
    fair sharing between tenants."""

    enabled: bool = True
    """Admit at most each ready replica's capacity (its upstream's max_concurrency, or its local
    pool's profile max_num_seqs) per pool and queue the rest in the gateway. Off:
    every request goes straight to a replica and waits in the engine's own queue."""
    interactive: QueueClassConfig = Field(
        default_factory=lambda: QueueClassConfig(
            max_queue_depth=256, queue_timeout_s=30.0, ttft_target_s=2.0
        )
    )
    """The interactive class (tenant tiers interactive and internal)."""
    batch: QueueClassConfig = Field(
        default_factory=lambda: QueueClassConfig(max_queue_depth=4096, queue_timeout_s=600.0)
    )
    """The batch class (tenant tier batch, keys with priority batch, or the request header
    x-tidegate-priority: batch)."""
    interactive_reserve: float = Field(default=0.25, ge=0.0, lt=1.0)
    """Share of each pool's capacity batch requests may not take, so interactive requests find a
    free slot at once (rounded down; batch always gets at least one slot)."""
    ageing_s: float = Field(default=60.0, gt=0)
    """A batch request that has waited this long is served before interactive ones (and may use
    the reserved share) while batch holds fewer than half its share of the pool, so batch work
    is never starved."""
    tenant_weights: dict[str, float] = Field(default_factory=dict)
    """Fair-share weight per tenant name inside a class (deficit round robin by estimated
    tokens: prompt + max_tokens). Tenants not listed weigh 1."""
    quantum_tokens: int = Field(default=1024, ge=1)
    """Deficit round robin quantum: estimated tokens a weight-1 tenant may send per round."""
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    """Sharing each pool's capacity between gateway replicas."""
    engine_priority: bool = False
    """Start every local pool's vLLM replicas with --scheduling-policy priority and send each
    request's class to them as vLLM's `priority` field (0 interactive, 10 batch)."""
