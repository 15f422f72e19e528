"""Decision counts by policy, check, stage and outcome, with label sets fixed by the config."""

from __future__ import annotations

from typing import Literal

from prometheus_client import CollectorRegistry, Counter

__all__ = ["OUTCOMES", "Outcome", "SafetyMetrics", "Stage"]

Stage = Literal["input", "output"]
Outcome = Literal["pass", "block", "error_open", "error_closed"]
OUTCOMES: tuple[Outcome, ...] = ("pass", "block", "error_open", "error_closed")
"""pass: the check found nothing; block: it refused the text; error_open / error_closed: it
could not decide and its on_error let the text through / refused it."""


class SafetyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter(
            "tidegate_safety_decisions",
            "Content-safety check decisions by policy, check, stage and outcome.",
            ["policy", "check", "stage", "outcome"],
            registry=registry,
        )

    def children(self, policy: str, check: str, stage: Stage) -> dict[Outcome, Counter]:
        """The counters of one check, created up front (every series exists at 0)."""
        return {
            outcome: self.decisions.labels(policy, check, stage, outcome) for outcome in OUTCOMES
        }
