"""The rollout layer's request tap (``gateway.taps``): live requests of models with a traffic
policy feed the rollout statistics and, sampled, the shadow mirror."""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Any

from tidegate.observability.capture import ResponseCapture
from tidegate.observability.records import RequestRecord
from tidegate.pipeline.completions import PreparedRequest
from tidegate.rollout.shadow import ShadowMirror
from tidegate.rollout.stats import StepStats
from tidegate.rollout.sync import PolicySync


class RolloutTap:
    def __init__(self, *, sync: PolicySync, stats: StepStats, shadow: ShadowMirror) -> None:
        self._sync = sync
        self._stats = stats
        self._shadow = shadow

    @property
    def watched(self) -> Set[str]:
        return self._sync.watched

    def admitted(self, request: PreparedRequest, record: RequestRecord) -> None:
        if record.kind != "live":
            return  # batch lines count towards nothing here and are never mirrored
        mirrored = self._shadow.maybe_mirror(request, record, self._sync.shadow_for(record.model))
        if record.capture is None and (mirrored or self._stats.wants_capture(request, record)):
            record.capture = ResponseCapture()

    def finished(
        self, record: RequestRecord, *, duration_s: float, payload: Mapping[str, Any] | None
    ) -> None:
        if record.kind != "live":
            return
        self._stats.observe(record, duration_s=duration_s, payload=payload)
        self._shadow.primary_finished(record, duration_s=duration_s)
