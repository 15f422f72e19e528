"""A local pool's autoscaling policy: the one block the engine supervisor executes, the
simulator (`tidegate plan simulate --policy`) replays and the Helm chart renders as a KEDA
ScaledObject (values key ``engines.pools.<pool>.autoscaling`` takes these keys verbatim)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tidegate.config.section import Section

ScalingSignal = Literal["queue_depth", "in_flight_per_replica", "predicted_wait"]


class AutoscalingPolicy(Section):
    """When a pool gets more replicas or fewer (Kubernetes HPA semantics: desired =
    ceil(routed ready replicas × signal / target), clamped to [min_replicas, max_replicas])."""

    enabled: bool = False
    """Scale this pool between min_replicas and max_replicas (its `replicas` count is then
    not used). Off: the pool keeps its fixed replica count."""
    min_replicas: int = Field(default=1, ge=0)
    """Fewest routed replicas the pool keeps, however idle (0: none until a request comes;
    the first request then waits for a replica to load, or for a warm standby)."""
    max_replicas: int = Field(default=2, ge=1)
    """Most replicas of the pool, routed, standby and loading together."""
    warm_standby: int = Field(default=0, ge=0)
    """Replicas kept loaded but not routed to, counted inside max_replicas. When the policy
    wants one more routed replica a ready standby is promoted at once (no load wait), and a new
    standby starts loading while there is room under max_replicas."""
    signal: ScalingSignal = "in_flight_per_replica"
    """What is compared with target. queue_depth: requests waiting in the gateway's pool queue
    (all classes) per routed ready replica. in_flight_per_replica: requests in flight on the
    pool plus those waiting, per routed ready replica. predicted_wait: the pool queue's
    predicted wait in seconds for the interactive class."""
    target: float = Field(default=16.0, gt=0)
    """The signal's value one routed replica should carry (seconds for predicted_wait, where a
    ttft_target_s of the interactive class takes precedence: see prescale_fraction)."""
    prescale_fraction: float = Field(default=0.5, gt=0, le=1)
    """With signal predicted_wait and an interactive ttft_target_s (scheduling.interactive),
    the target is this fraction of that TTFT target: the pool scales up before the queue
    breaks the target, so a burst finds a replica loading or ready."""
    scale_up_stabilization_s: float = Field(default=0.0, ge=0)
    """Scale up only to the lowest recommendation of this many past seconds (0: at once)."""
    scale_down_stabilization_s: float = Field(default=60.0, ge=0)
    """Scale down only to the highest recommendation of this many past seconds, so a short
    lull does not stop a replica the next burst needs."""
    cooldown_s: float = Field(default=120.0, ge=0)
    """Never two scale-downs within this many seconds (a scale-down stops one replica)."""
    idle_scale_to_min_s: float = Field(default=300.0, ge=0)
    """No request at all for this long: straight down to min_replicas (0: never)."""
    evaluation_interval_s: float = Field(default=1.0, gt=0)
    """How often the policy looks at the pool's queue and replicas."""

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingPolicy:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"autoscaling.min_replicas ({self.min_replicas}) must not exceed "
                f"max_replicas ({self.max_replicas})"
            )
        if self.min_replicas + self.warm_standby > self.max_replicas:
            raise ValueError(
                f"autoscaling.warm_standby ({self.warm_standby}) does not fit: standbys count "
                f"inside max_replicas ({self.max_replicas}), and min_replicas "
                f"({self.min_replicas}) already takes {self.min_replicas} of them"
            )
        return self
