"""Rollout and shadow metrics. Labels come from fixed sets: ``model`` and ``pool`` are names
from the config's routing table, ``state``/``outcome`` members of the tuples below."""

from __future__ import annotations

from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge

RolloutState = Literal["running", "paused", "promoted", "rolled_back", "aborted"]
ROLLOUT_STATES: tuple[RolloutState, ...] = (
    "running",
    "paused",
    "promoted",
    "rolled_back",
    "aborted",
)
ShadowOutcome = Literal["mirrored", "dropped", "error", "timeout"]
SHADOW_OUTCOMES: tuple[ShadowOutcome, ...] = ("mirrored", "dropped", "error", "timeout")


class RolloutMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.traffic_share = Gauge(
            "tidegate_traffic_share",
            "The share of a model's traffic (0 to 1) its split sends to each pool.",
            ["model", "pool"],
            registry=registry,
        )
        self.rollout_step = Gauge(
            "tidegate_rollout_step",
            "The running rollout's current step (0-based) per model; -1 without one.",
            ["model"],
            registry=registry,
        )
        self.rollout_state = Gauge(
            "tidegate_rollout_state",
            "1 for the state of the model's latest rollout, 0 for the others.",
            ["model", "state"],
            registry=registry,
        )
        self.rollout_transitions = Counter(
            "tidegate_rollout_transitions",
            "Rollout transitions this gateway's controller made, by the state reached.",
            ["model", "state"],
            registry=registry,
        )
        self.shadow_requests = Counter(
            "tidegate_shadow_requests",
            "Requests mirrored to a shadow pool, by outcome (dropped: the shadow was saturated).",
            ["model", "outcome"],
            registry=registry,
        )
