"""What the routes need, built by the app's lifespan and handed to the routes explicitly."""

from __future__ import annotations

from dataclasses import dataclass

from tidegate.batch.files import FileService
from tidegate.batch.service import BatchService
from tidegate.errors import NoReadyReplicaError
from tidegate.metering.queries import UsageQueries
from tidegate.observability.dependencies import Dependencies
from tidegate.observability.metrics import GatewayMetrics
from tidegate.observability.tracing import Tracing
from tidegate.pipeline.accounting import RequestAccounting
from tidegate.pipeline.completions import CompletionService
from tidegate.pipeline.limits import Limiter
from tidegate.rollout.adapters import AdapterService
from tidegate.rollout.wiring import RolloutServices
from tidegate.routing.replicas import RoutingTable
from tidegate.tenancy.audit import AuditLog
from tidegate.tenancy.keys import KeyService
from tidegate.tenancy.tenants import TenantService


@dataclass(frozen=True, slots=True)
class ApiServices:
    keys: KeyService
    tenants: TenantService
    audit: AuditLog
    completions: CompletionService
    accounting: RequestAccounting
    tracing: Tracing
    metrics: GatewayMetrics
    routing: RoutingTable
    dependencies: Dependencies
    """The store's and the limit store's health (for /readyz)."""
    max_body_bytes: int
    usage: UsageQueries
    limiter: Limiter | None = None
    """The request path's limiter, so budgets given at runtime start from the spend so far."""
    files: FileService | None = None
    """The Files API; None when batch.enabled is false."""
    batches: BatchService | None = None
    """The Batch API; None when batch.enabled is false."""
    rollouts: RolloutServices | None = None
    """Versions, traffic policies, rollouts and shadow reports; None when rollouts.enabled is
    false."""
    adapters: AdapterService | None = None
    """Runtime LoRA adapters (/admin/adapters)."""
    metrics_token: str | None = None
    """server.metrics_token: opens /metrics on the API port (so do operators' admin keys)."""


class ServicesSlot:
    """Filled once by the lifespan; routes read it. Empty only before startup finished."""

    def __init__(self) -> None:
        self._services: ApiServices | None = None

    def fill(self, services: ApiServices) -> None:
        self._services = services

    def clear(self) -> None:
        self._services = None

    def get(self) -> ApiServices:
        if self._services is None:
            raise NoReadyReplicaError(
                "The gateway is still starting. Retry shortly.", retry_after_s=1.0
            )
        return self._services
