"""Request taps: how the rollout layer watches live requests without the request path knowing
about rollouts.

A tap names the public models it watches; only their requests pay for it. It sees each watched
request once admitted (it may ask for the response to be captured, or mirror the request) and
once finished (after metering, with the request's duration). Both calls are synchronous and must
not block: a tap that needs I/O schedules it.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Any, Protocol

from tidegate.observability.records import RequestRecord
from tidegate.pipeline.prepared import PreparedRequest


class RequestTap(Protocol):
    @property
    def watched(self) -> Set[str]:
        """The public model names whose requests the tap sees."""
        ...

    def admitted(self, request: PreparedRequest, record: RequestRecord) -> None:
        """A watched request passed admission; it has not reached a pool yet."""
        ...

    def finished(
        self, record: RequestRecord, *, duration_s: float, payload: Mapping[str, Any] | None
    ) -> None:
        """A request ``admitted`` saw is over (metered; the client may still be receiving)."""
        ...
