"""The autoscaler of one local pool: samples the pool, asks its ``ScalingDecider``, acts.

Every ``evaluation_interval_s`` it reads the pool's signal from the gateway's scheduler queue
(``scheduling.signals``: the values the gateway exports for KEDA; without the scheduler, from
the replicas' own in-flight and engine queue counts) and the replicas' states, and reconciles the
pool with the decision: more routed replicas come from ready standbys first (promoted at once),
then from standbys still loading, then from new replicas; fewer routed replicas are drained,
then stopped; standbys are refilled while there is room under max_replicas. Reconciling is
idempotent, so an action that could not happen yet (no room while a replica drains) happens at
a later evaluation.

Each action is one scale event: a metric (``tidegate_pool_scale_events_total``), one INFO log
line and an audit event (action ``pool.scale``), written off the loop through ``audit``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from tidegate.autoscaling.policy import (
    ScalingDecider,
    ScalingDecision,
    ScalingReason,
    ScalingSample,
)
from tidegate.autoscaling.signals import signal_value
from tidegate.background import BackgroundTask, TaskSet
from tidegate.config import AutoscalingPolicy
from tidegate.engines.replica_set import Member, PoolReplicas, Role
from tidegate.engines.scaling_metrics import Direction, ScalingMetrics
from tidegate.routing.replicas import Pool
from tidegate.scheduling.scheduler import Scheduler
from tidegate.scheduling.signals import queue_signal

log = logging.getLogger(__name__)

ScaleAudit = Callable[[str, dict[str, Any]], Awaitable[None]]
"""Records one scale event of the pool named first (the app writes it to the audit log)."""
Action = Literal["promoted", "started", "started_standby", "drained", "stopped_standby"]
_AUDIT_WAIT_S = 5.0


class PoolAutoscaler:
    def __init__(
        self,
        *,
        replicas: PoolReplicas,
        policy: AutoscalingPolicy,
        target: float,
        pool: Pool,
        scheduler: Scheduler | None,
        metrics: ScalingMetrics,
        audit: ScaleAudit | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``pool``: the routing table's pool the replicas join (its scheduler queue gives
        the signal); ``target``: ``effective_target(policy, ...)``."""
        self.replicas = replicas
        self.policy = policy
        self.pool = pool
        self.decider = ScalingDecider(
            policy, target=target, current_routed=replicas.counts().routed
        )
        self._scheduler = scheduler
        self._metrics = metrics
        self._audit = audit
        self._clock = clock
        self._audits = TaskSet()
        self._task = BackgroundTask(f"autoscaler-{replicas.name}", self._run)
        self.last_signal = 0.0
        self._refused_seen = 0

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        """Stop evaluating; audit writes in progress get a few seconds to finish."""
        await self._task.stop()
        pending = self._audits.snapshot()
        if pending:
            await asyncio.wait(pending, timeout=_AUDIT_WAIT_S)
        await self._audits.cancel_all()

    # -- one evaluation --------------------------------------------------------------------

    def evaluate(self) -> ScalingDecision:
        sample = self.sample()
        decision = self.decider.decide(sample)
        replicas = self.replicas
        wanted = (decision.desired_routed, decision.desired_standby)
        changed = wanted != (replicas.desired_routed, replicas.desired_standby)
        replicas.desired_routed, replicas.desired_standby = wanted
        self._reconcile(decision)
        if changed:
            replicas.changed()  # engines.json shows what is wanted, even before it can happen
        self.export()
        return decision

    def sample(self) -> ScalingSample:
        """The pool now; also notes new replicas' first requests."""
        seen = False
        for member in self.replicas.members.values():
            replica = member.runner.replica
            if replica.leases != member.leases_seen:
                seen = True
                member.leases_seen = replica.leases
            if not member.first_reported and replica.first_lease_at is not None:
                member.first_reported = True
                self._metrics.first_request(self.replicas.name, replica.id, replica.first_lease_at)
        if self._scheduler is not None:
            # At zero replicas requests are refused, not queued: they count as arrivals.
            refused = self._scheduler.queue(self.pool).refused_unready
            seen = seen or refused != self._refused_seen
            self._refused_seen = refused
        counts = self.replicas.counts()
        self.last_signal, busy = self._signal(counts.routed_ready)
        return ScalingSample(
            now=self._clock(),
            routed_ready=counts.routed_ready,
            standby_ready=counts.standby_ready,
            starting=counts.routed_starting + counts.standby_starting,
            signal_value=self.last_signal,
            requests_seen=seen or busy,
        )

    def export(self) -> None:
        counts = self.replicas.counts()
        self._metrics.replicas(self.replicas.name, counts.by_state(), self.replicas.desired_routed)

    def _signal(self, ready: int) -> tuple[float, bool]:
        """The policy's signal (``scheduling.signals``, as exported) and whether any request
        is waiting or in flight."""
        signal = self.policy.signal
        if self._scheduler is not None:
            queue = self._scheduler.queue(self.pool)
            busy = queue.waiting > 0 or queue.in_flight > 0
            return queue_signal(signal, queue, ready=ready), busy
        # No gateway queue: requests wait in the engines' own queues.
        routed = [m.runner.replica for m in self.replicas.active(Role.ROUTED)]
        total = sum(r.outstanding for r in routed)
        waiting = min(total, sum(r.engine_waiting for r in routed))
        value = signal_value(
            signal, ready=ready, waiting=waiting, in_flight=total - waiting, predicted_wait_s=0.0
        )
        return value, total > 0

    # -- acting ----------------------------------------------------------------------------

    def _reconcile(self, decision: ScalingDecision) -> None:
        up, down = _reasons(decision.reason, self.policy)
        replicas = self.replicas
        while len(replicas.active(Role.ROUTED)) < decision.desired_routed:
            member = replicas.promote()
            if member is not None:
                self._event("up", up, "promoted", member, decision)
                if self._scheduler is not None:
                    self._scheduler.queue(self.pool).dispatch()  # its capacity is there now
                continue
            member = replicas.start(Role.ROUTED)
            if member is None:
                break  # no room until a replica being retired is gone
            self._event("up", up, "started", member, decision)
        while len(replicas.active(Role.ROUTED)) > decision.desired_routed:
            member = replicas.retire(Role.ROUTED)
            if member is None:
                break
            self._event("down", down, "drained", member, decision)
        while len(replicas.active(Role.STANDBY)) < decision.desired_standby:
            member = replicas.start(Role.STANDBY)
            if member is None:
                break
            self._event("up", "standby_refill", "started_standby", member, decision)
        while len(replicas.active(Role.STANDBY)) > decision.desired_standby:
            member = replicas.retire(Role.STANDBY)
            if member is None:
                break
            self._event("down", down, "stopped_standby", member, decision)

    def _event(
        self,
        direction: Direction,
        reason: ScalingReason,
        action: Action,
        member: Member,
        decision: ScalingDecision,
    ) -> None:
        name, replica = self.replicas.name, member.runner.replica.id
        if action in ("started", "started_standby"):
            self._metrics.forget_first_request(name, replica)  # an earlier replica of this id
        self._metrics.scaled(name, direction, reason, 1)
        counts = self.replicas.counts()
        log.info(
            "pool %s scaled %s (%s): %s replica %s; routed %d wanted %d, standby %d wanted %d; "
            "%s %.2f (target %.2f)",
            name,
            direction,
            reason,
            action,
            replica,
            counts.routed,
            decision.desired_routed,
            counts.standby,
            decision.desired_standby,
            self.policy.signal,
            self.last_signal,
            self.decider.target,
        )
        if self._audit is not None:
            details: dict[str, Any] = {
                "direction": direction,
                "reason": reason,
                "action": action,
                "replica": replica,
                "desired_routed": decision.desired_routed,
                "desired_standby": decision.desired_standby,
                "signal": self.policy.signal,
                "signal_value": round(self.last_signal, 4),
                "target": self.decider.target,
            }
            self._audits.spawn(self._write_audit(name, details))

    async def _write_audit(self, name: str, details: dict[str, Any]) -> None:
        assert self._audit is not None
        try:
            await self._audit(name, details)
        except Exception:  # the store being down must not stop scaling
            log.warning("could not audit the scale event of pool %s", name, exc_info=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.policy.evaluation_interval_s)
            try:
                self.evaluate()
            except Exception:
                log.exception("autoscaler of pool %s failed; trying again", self.replicas.name)


def _reasons(
    reason: ScalingReason | None, policy: AutoscalingPolicy
) -> tuple[ScalingReason, ScalingReason]:
    """The reasons actions up and down carry: the decision's, or (reconciling an earlier
    decision that could not be carried out at once) the usual one of each direction."""
    up: ScalingReason = "prescale" if policy.signal == "predicted_wait" else "queue_pressure"
    down: ScalingReason = "low_load"
    if reason in ("queue_pressure", "prescale", "min_replicas"):
        up = reason
    elif reason in ("low_load", "idle"):
        down = reason
    return up, down
