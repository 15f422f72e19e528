"""Model versions, splits, shadow traffic and staged rollouts."""

from __future__ import annotations

from pydantic import Field

from tidegate.config.section import Section


class RolloutConfig(Section):
    """Model versions, traffic splits, shadow traffic and staged rollouts. Their state lives in
    the store, so every gateway replica follows the same split and one of them drives a
    rollout."""

    enabled: bool = True
    """Read traffic policies from the store and run the rollout controller."""
    sync_interval_s: float = Field(default=2.0, gt=0)
    """How often each gateway re-reads the traffic policies (splits, shadow) from the store."""
    controller_interval_s: float = Field(default=1.0, gt=0)
    """How often the controller checks the running rollouts' gates."""
    lock_ttl_s: float = Field(default=10.0, gt=0)
    """The controller lock's lease: another gateway takes over this long after its holder died."""
    stats_flush_interval_s: float = Field(default=2.0, gt=0)
    """How often each gateway writes its per-step request statistics to the store."""
    keep_versions: int = Field(default=10, ge=1)
    """Version records kept per public model name (older ones are deleted)."""
    shadow_max_concurrency: int = Field(default=8, ge=1)
    """Mirrored requests in flight at once per gateway; more are dropped (and counted)."""
    shadow_retention_days: int = Field(default=30, ge=1)
    """How long shadow comparisons without texts are kept (those with texts follow the tenant's
    prompt_retention_days)."""
    shadow_timeout_s: float = Field(default=120.0, gt=0)
    """A mirrored request taking longer is abandoned and recorded as an error."""
