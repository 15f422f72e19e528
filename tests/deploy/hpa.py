"""The Kubernetes HPA's decision for one ScaledObject trigger, as the HPA controller computes it
(kubernetes pkg/controller/podautoscaler: replica_calculator.go GetExternalMetricReplicas for
an external metric with a Value target, horizontal.go stabilizeRecommendationWithBehaviors and
convertDesiredReplicasWithBehaviorRate), driven by nothing but the rendered ScaledObject: the
second executor of a tidegate policy, to compare with ``ScalingDecider`` on the same trace."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TOLERANCE = 0.1
"""The cluster-wide --horizontal-pod-autoscaler-tolerance."""


@dataclass
class Hpa:
    spec: dict[str, Any]
    """The ScaledObject's spec."""
    current: int
    tolerance: float = DEFAULT_TOLERANCE
    _recommendations: list[tuple[float, int]] = field(default_factory=list)
    _events: list[tuple[float, int]] = field(default_factory=list)  # (time, replicas added)

    def step(self, now: float, value: float) -> int:
        """One HPA sync at ``now`` with the query's ``value``; returns the new replica count."""
        spec = self.spec
        threshold = float(spec["triggers"][0]["metadata"]["threshold"])
        behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        ratio = value / threshold
        proposed = self.current
        if abs(ratio - 1.0) > self.tolerance:
            proposed = math.ceil(ratio * self.current)
        proposed = min(spec["maxReplicaCount"], max(spec["minReplicaCount"], proposed))
        # Stabilisation: up to the lowest recommendation of the up window, down to the highest
        # of the down window (recommendations strictly after the cutoff, plus this one).
        self._recommendations.append((now, proposed))
        up_cut = now - behavior["scaleUp"]["stabilizationWindowSeconds"]
        down_cut = now - behavior["scaleDown"]["stabilizationWindowSeconds"]
        up = min([r for t, r in self._recommendations if t > up_cut] + [proposed])
        down = max([r for t, r in self._recommendations if t > down_cut] + [proposed])
        desired = self.current
        desired = max(desired, up)
        desired = min(desired, down)
        # Rate limits: the policies' changes over their periods (selectPolicy Max).
        if desired > self.current:
            limit = max(
                self.current - self._changed(now, p["periodSeconds"], up=True) + p["value"]
                for p in behavior["scaleUp"]["policies"]
            )
            desired = min(desired, limit, spec["maxReplicaCount"])
        elif desired < self.current:
            limit = min(
                self.current + self._changed(now, p["periodSeconds"], up=False) - p["value"]
                for p in behavior["scaleDown"]["policies"]
            )
            desired = max(desired, limit, spec["minReplicaCount"])
        if desired != self.current:
            self._events.append((now, desired - self.current))
        self.current = desired
        return desired

    def _changed(self, now: float, period: float, *, up: bool) -> int:
        """Replicas added (up) or removed (down) by scale events strictly inside the period."""
        return sum(
            abs(delta) for t, delta in self._events if t > now - period and (delta > 0) == up
        )
