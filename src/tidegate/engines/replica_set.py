"""One local pool's replicas, as a set that grows and shrinks at runtime.

Each member is a ``ReplicaRunner`` with a role: ROUTED replicas are in the routing table (the
balancer and the pool's capacity count them once READY), warm STANDBY replicas load and are
health-checked like any other but stay out of the routing table until ``promote`` puts them in,
so nothing is routed to them and no capacity counts them. Retiring a routed replica drains it
first (out of rotation, in-flight requests finish within engines.drain_grace_s), then stops its
process group and takes it out of the table; a standby has no traffic and just stops.

A new member takes the lowest free index (ids ``r0, r1 …`` / ``{pool}-rN`` stay a bounded set,
below the pool's most replicas) and a free port; its CPU share was reserved for that index by
``ReplicaPlanner``. Members being retired still count against the pool's most replicas until
their process is gone, so a replacement never shares their cores.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum

from tidegate.background import TaskSet
from tidegate.config import EnginesConfig, LocalPool
from tidegate.engines.pools import ReplicaPlanner, ReplicaSpec
from tidegate.engines.ports import free_ports
from tidegate.engines.replica_runner import ReplicaRunner
from tidegate.engines.scaling_metrics import PoolReplicaState
from tidegate.engines.state_file import PoolRecord, ReplicaRecord
from tidegate.routing.replicas import ReplicaState, RoutingTable

log = logging.getLogger(__name__)


class Role(StrEnum):
    ROUTED = "routed"
    STANDBY = "standby"


@dataclass(eq=False)
class Member:
    index: int
    runner: ReplicaRunner
    role: Role
    retiring: bool = False
    leases_seen: int = 0
    """The replica's lease count at the autoscaler's previous look (arrivals since then)."""
    first_reported: bool = False
    """Its first request's time has been exported."""

    @property
    def ready(self) -> bool:
        return self.runner.replica.state is ReplicaState.READY

    def state(self) -> PoolReplicaState:
        if self.retiring or self.runner.replica.state is ReplicaState.DRAINING:
            return "draining"
        if not self.ready:
            return "starting"
        return "ready" if self.role is Role.ROUTED else "standby"


@dataclass(frozen=True)
class PoolCounts:
    routed_ready: int = 0
    routed_starting: int = 0
    standby_ready: int = 0
    standby_starting: int = 0
    draining: int = 0

    @property
    def routed(self) -> int:
        return self.routed_ready + self.routed_starting

    @property
    def standby(self) -> int:
        return self.standby_ready + self.standby_starting

    @property
    def running(self) -> int:
        """Every process the pool has, including those being retired."""
        return self.routed + self.standby + self.draining

    def by_state(self) -> dict[PoolReplicaState, int]:
        return {
            "starting": self.routed_starting + self.standby_starting,
            "standby": self.standby_ready,
            "ready": self.routed_ready,
            "draining": self.draining,
        }


RunnerFactory = Callable[[ReplicaSpec], ReplicaRunner]


class PoolReplicas:
    def __init__(
        self,
        *,
        pool: LocalPool,
        planner: ReplicaPlanner,
        routing: RoutingTable,
        make_runner: RunnerFactory,
        settings: EnginesConfig,
        on_change: Callable[[], None],
        ports_in_use: Callable[[], set[int]],
        host: str = "127.0.0.1",
    ) -> None:
        """``on_change``: after every change of membership or role. ``ports_in_use``: the
        ports every local replica has now (a new one must not take one of them)."""
        self.pool = pool
        self.name = pool.name
        self.most = pool.most_replicas
        self._planner = planner
        self._routing = routing
        self._make_runner = make_runner
        self._settings = settings
        self._on_change = on_change
        self._ports_in_use = ports_in_use
        self._host = host
        self.members: dict[int, Member] = {}
        policy = pool.autoscaling
        self.desired_routed = policy.min_replicas if policy.enabled else pool.replicas
        """Routed replicas wanted (the autoscaler sets it; a fixed pool's count)."""
        self.desired_standby = policy.warm_standby if policy.enabled else 0
        self._retiring = TaskSet()

    # -- reading ---------------------------------------------------------------------------

    @property
    def runners(self) -> list[ReplicaRunner]:
        return [self.members[index].runner for index in sorted(self.members)]

    def active(self, role: Role) -> list[Member]:
        """Members of ``role`` not being retired, lowest index first."""
        return [m for _, m in sorted(self.members.items()) if m.role is role and not m.retiring]

    def counts(self) -> PoolCounts:
        counts = dict.fromkeys(
            ("routed_ready", "routed_starting", "standby_ready", "standby_starting", "draining"),
            0,
        )
        for member in self.members.values():
            if member.retiring:
                key = "draining"
            else:
                key = f"{member.role.value}_{'ready' if member.ready else 'starting'}"
            counts[key] += 1
        return PoolCounts(**counts)

    def records(self) -> list[ReplicaRecord]:
        records = []
        for member in (self.members[index] for index in sorted(self.members)):
            record = member.runner.record()
            if member.role is Role.STANDBY:
                state = "standby" if member.ready else record.state
                record = replace(record, role=Role.STANDBY.value, state=state)
            records.append(record)
        return records

    def record(self) -> PoolRecord:
        policy = self.pool.autoscaling
        return PoolRecord(
            name=self.name,
            autoscaling=policy.enabled,
            desired_routed=self.desired_routed,
            desired_standby=self.desired_standby,
            min_replicas=policy.min_replicas if policy.enabled else self.pool.replicas,
            max_replicas=self.most,
        )

    # -- changing ----------------------------------------------------------------------------

    def changed(self) -> None:
        """Something the state file shows changed (the wanted counts)."""
        self._on_change()

    def start(self, role: Role) -> Member | None:
        """Start one more replica in ``role``; None when the pool already runs its most."""
        if len(self.members) >= self.most:
            return None
        index = next(i for i in range(self.most) if i not in self.members)
        spec = self._planner.spec(self.name, index, self._free_port())
        runner = self._make_runner(spec)
        member = self.members[index] = Member(index=index, runner=runner, role=role)
        if role is Role.ROUTED:
            self._routing.add(runner.replica)
        runner.start()
        self._on_change()
        return member

    def promote(self) -> Member | None:
        """A standby joins the routing table: a ready one if any, else one still loading
        (routed as soon as it is ready); None: no standby."""
        standbys = self.active(Role.STANDBY)
        if not standbys:
            return None
        member = next((m for m in standbys if m.ready), standbys[0])
        member.role = Role.ROUTED
        self._routing.add(member.runner.replica)
        self._on_change()
        return member

    def retire(self, role: Role) -> Member | None:
        """Take one member of ``role`` away (one not yet ready first, then the least busy,
        then the highest index); None: the pool has none."""
        members = self.active(role)
        if not members:
            return None
        member = min(
            members,
            key=lambda m: (m.ready, m.runner.replica.outstanding, -m.index),
        )
        member.retiring = True
        if role is Role.ROUTED:
            member.runner.begin_drain()  # out of rotation before anything else is picked
        self._retiring.spawn(self._retire(member))
        self._on_change()
        return member

    async def _retire(self, member: Member) -> None:
        runner = member.runner
        if member.role is Role.ROUTED:
            deadline = time.monotonic() + self._settings.drain_grace_s
            await runner.drain(deadline=deadline)
            if runner.replica.outstanding:
                log.warning(
                    "replica %s still had %d requests in flight after %.0fs of draining",
                    runner.replica.id,
                    runner.replica.outstanding,
                    self._settings.drain_grace_s,
                )
        await runner.stop()
        self._routing.remove(runner.replica)
        self.members.pop(member.index, None)
        self._on_change()

    async def stop(self) -> None:
        """Interrupt retirements (the caller drains and stops every runner left)."""
        await self._retiring.cancel_all()

    def _free_port(self) -> int:
        # Picked one at a time, a free port may be one a replica still loading has not bound
        # yet: skip those.
        taken = self._ports_in_use()
        for _ in range(100):
            (port,) = free_ports(1, self._host)
            if port not in taken:
                return port
        raise OSError("no free port for a new replica")
