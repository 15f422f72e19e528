"""Writing a model's traffic split: the one place a split is written, in the caller's
transaction. The admin API, the CLI, rollback and the rollout controller all use it, so each
change bumps the policy's revision (gateways apply it within rollouts.sync_interval_s) and is
audited with it."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from tidegate.store.models import SYSTEM_TENANT_ID, TrafficPolicy
from tidegate.tenancy import audit
from tidegate.tenancy.actors import Actor


async def write_split(
    session: AsyncSession,
    *,
    model: str,
    stable_pool: str,
    weights: list[tuple[str, float]],
    actor: Actor,
    action: audit.Action = "traffic.split_changed",
    details: dict[str, object] | None = None,
) -> TrafficPolicy:
    """Set the model's split (creating its policy row if needed) and audit the change.

    ``weights``: (pool, weight) in order, the first pools taking the low end of the sticky hash
    space (put a rollout's candidate first). The caller has checked the pool names.
    """
    now = datetime.now(UTC)
    policy = await session.get(TrafficPolicy, model, with_for_update=True)
    if policy is None:
        policy = TrafficPolicy(
            model=model,
            stable_pool=stable_pool,
            sticky_by="session",
            shadow_sample=0.0,
            revision=0,
        )
        session.add(policy)
    policy.stable_pool = stable_pool
    policy.weights = [[pool, weight] for pool, weight in weights]
    policy.revision = (policy.revision or 0) + 1
    policy.updated_at = now
    policy.updated_by = actor.name
    audit.record(
        session,
        actor=actor,
        action=action,
        tenant_id=SYSTEM_TENANT_ID,
        target_type="model",
        target_id=model,
        details={"stable_pool": stable_pool, "weights": policy.weights, **(details or {})},
    )
    return policy
