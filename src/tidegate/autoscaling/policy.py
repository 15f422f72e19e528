"""The scaling decision of one ``AutoscalingPolicy``: pure, the clock comes in each sample.

Kubernetes HPA semantics (KEDA metricType "Value"), so the policy tried here is the one the Helm
chart's ScaledObject deploys:

- the raw recommendation is ``ceil(routed_ready × signal / target)``; with no routed replica
  ready but load present it is ``max(1, min_replicas)``, clamped to [min_replicas, max_replicas];
- scale up to the LOWEST recommendation of the last ``scale_up_stabilization_s``, down to the
  HIGHEST of the last ``scale_down_stabilization_s`` (a short spike does not add a replica when
  the up window is long, a short lull does not stop one);
- a scale-down stops one replica and never comes within ``cooldown_s`` of the previous one;
- no request for ``idle_scale_to_min_s``: straight down to min_replicas (cooldown still holds);
- warm standbys fill whatever of ``warm_standby`` fits under max_replicas beside the routed ones.

Both executors (``engines.autoscaler`` for local replicas, ``plan`` for the simulator) feed a
``ScalingDecider`` one ``ScalingSample`` per evaluation and carry out its ``ScalingDecision``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Final, Literal

from tidegate.config import AutoscalingPolicy

ScalingReason = Literal[
    "queue_pressure", "prescale", "low_load", "idle", "min_replicas", "standby_refill"
]
SCALING_REASONS: Final[tuple[ScalingReason, ...]] = (
    "queue_pressure",
    "prescale",
    "low_load",
    "idle",
    "min_replicas",
    "standby_refill",
)
"""Every reason a decision gives (the fixed label set of the scale-event metric)."""


def effective_target(policy: AutoscalingPolicy, ttft_target_s: float | None) -> float:
    """The value ``signal`` is compared with: for predicted_wait with an interactive TTFT
    target, ``prescale_fraction`` of that target (scale before the queue breaks it); else
    ``policy.target``."""
    if policy.signal == "predicted_wait" and ttft_target_s is not None and ttft_target_s > 0:
        return policy.prescale_fraction * ttft_target_s
    return policy.target


@dataclass(frozen=True)
class ScalingSample:
    """One evaluation's inputs."""

    now: float
    """Monotonic seconds."""
    routed_ready: int
    """Replicas ready and routed to."""
    standby_ready: int
    """Warm standbys ready (loaded, not routed to)."""
    starting: int
    """Replicas loading (to be routed or standby)."""
    signal_value: float
    """The policy's signal (``AutoscalingPolicy.signal``); with no routed replica ready, the
    per-replica signals are the pool's totals."""
    requests_seen: bool
    """Any request arrived since the previous sample."""


@dataclass(frozen=True)
class ScalingDecision:
    desired_routed: int
    """Routed replicas wanted now."""
    desired_standby: int
    """Warm standbys wanted now."""
    reason: ScalingReason | None
    """Why the routed count (or, alone, the standby count) changed; None: no change."""


class ScalingDecider:
    """Remembers the recommendations of the stabilisation windows, the last scale-down and the
    last request; ``decide`` is called once per evaluation with a non-decreasing ``now``."""

    def __init__(
        self, policy: AutoscalingPolicy, *, target: float, current_routed: int | None = None
    ) -> None:
        """``target``: ``effective_target(policy, ...)``. ``current_routed``: the routed
        replicas the executor starts with (None: min_replicas)."""
        if target <= 0:
            raise ValueError(f"the scaling target must be positive, not {target}")
        self.policy = policy
        self.target = target
        self.desired_routed = policy.min_replicas if current_routed is None else current_routed
        self.desired_standby = self._standby_for(self.desired_routed)
        self._history: deque[tuple[float, int]] = deque()
        self._last_scale_down: float | None = None
        self._last_request: float | None = None

    def decide(self, sample: ScalingSample) -> ScalingDecision:
        policy = self.policy
        now = sample.now
        if sample.requests_seen or self._last_request is None:
            self._last_request = now  # the idle clock starts at the first evaluation
        raw = self._recommend(sample)
        self._remember(now, raw)
        current = self.desired_routed
        desired: int = current
        reason: ScalingReason | None = None
        if current < policy.min_replicas:
            desired, reason = policy.min_replicas, "min_replicas"
        elif self._idle(now) and current > policy.min_replicas:
            if self._may_scale_down(now):
                desired, reason = policy.min_replicas, "idle"
        else:
            up = min(rec for t, rec in self._history if now - t <= policy.scale_up_stabilization_s)
            down = max(
                rec for t, rec in self._history if now - t <= policy.scale_down_stabilization_s
            )
            if current < up:
                desired = up
                reason = "prescale" if policy.signal == "predicted_wait" else "queue_pressure"
            elif current > down and self._may_scale_down(now):
                desired, reason = current - 1, "low_load"
        if desired < current:
            self._last_scale_down = now
        standby = self._standby_for(desired)
        if reason is None and standby > self.desired_standby:
            reason = "standby_refill"
        self.desired_routed, self.desired_standby = desired, standby
        return ScalingDecision(desired_routed=desired, desired_standby=standby, reason=reason)

    # -- internals ------------------------------------------------------------------------

    def _recommend(self, sample: ScalingSample) -> int:
        policy = self.policy
        signal = max(0.0, sample.signal_value)
        if sample.routed_ready == 0:
            loaded = signal > 0 or sample.requests_seen
            raw = max(1, policy.min_replicas) if loaded else policy.min_replicas
        else:
            # A tiny epsilon keeps float noise (3 × 16 / 16 = 3.0000000004) from adding one.
            raw = math.ceil(sample.routed_ready * signal / self.target - 1e-9)
        return min(policy.max_replicas, max(policy.min_replicas, raw))

    def _remember(self, now: float, recommendation: int) -> None:
        self._history.append((now, recommendation))
        keep = max(self.policy.scale_up_stabilization_s, self.policy.scale_down_stabilization_s)
        while self._history and now - self._history[0][0] > keep:
            self._history.popleft()

    def _idle(self, now: float) -> bool:
        idle_s = self.policy.idle_scale_to_min_s
        last = self._last_request
        return idle_s > 0 and last is not None and now - last >= idle_s

    def _may_scale_down(self, now: float) -> bool:
        last = self._last_scale_down
        return last is None or now - last >= self.policy.cooldown_s

    def _standby_for(self, routed: int) -> int:
        return max(0, min(self.policy.warm_standby, self.policy.max_replicas - routed))
