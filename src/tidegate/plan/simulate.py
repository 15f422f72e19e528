"""The scaling simulator: a traffic trace replayed against a pool model and a scaling policy,
as discrete events, with no engine.

What it models is what the gateway and the engine supervisor do:

- the gateway's pool queue (``scheduling.pool_queue``, interactive class): a request takes a slot
  at once while the pool's slots taken are fewer than its routed ready replicas' capacity and
  nobody waits, else it queues (FIFO); a full queue (``max_queue_depth`` waiting) is a 429, a
  request still waiting after ``queue_timeout_s`` a 503, and so is one that finds no routed
  replica ready and nobody queued (a pool at zero refuses until a replica is ready);
- a granted request goes to the routed ready replica with the fewest requests (least
  outstanding); a replica runs up to ``max_concurrency`` of them, the rest wait on it, and
  every running one advances at the pool model's speed for that many (processor sharing),
  times the host's share for the replicas active on it (``PoolModel.host_factor``: ready and
  draining ones, loading ones at ``loading_load``; 1 without ``host_speedup``). A
  draining replica's requests still hold their gateway slots while its capacity is gone, as in
  the gateway's queue;
- scaling: the same ``ScalingDecider`` the supervisor runs, fed a ``ScalingSample`` every
  ``evaluation_interval_s``. A new replica is routed ``cold_start_s`` after its start
  (``cold_start_busy_s`` when another replica is serving requests then), a ready
  standby is promoted at once, a scale-down first cancels a replica still loading, else drains
  the routed replica with the least work (no new requests; it stops when its last one ends),
  carried out as ``engines.autoscaler`` reconciles (same order, same room under max_replicas,
  draining replicas included).

The pool starts warm: min_replicas routed and warm_standby standbys ready at t = 0 (a fixed pool:
its N replicas). The run ends when the last request has ended.

The Python API (what ``tidegate plan simulate`` and the burst benchmark call)::

    trace = load_trace(Path("run.csv"))  # or [TraceRequest(t, prompt, completion), ...]
    pool = PoolModel(max_concurrency=4, first_token_s=0.3, tpot_s=0.05, cold_start_s=40)
    result = simulate(trace, pool, policy)  # an AutoscalingPolicy, a PolicySpec, or N fixed
    result.ttft_percentile(95)              # seconds; per request: result.requests[i].ttft_s
    result.timeline                         # one TimelinePoint a second: desired, ready, ...
    result.replicas[1].first_request_s      # when the second replica served its first request
    summarize(result, sla=parse_sla("ttft_p95=2s"))  # plan.simulate_report: the table's row
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from tidegate.autoscaling.policy import (
    ScalingDecider,
    ScalingDecision,
    ScalingSample,
    effective_target,
)
from tidegate.autoscaling.signals import signal_value
from tidegate.config import AutoscalingPolicy, QueueClassConfig
from tidegate.percentiles import percentile
from tidegate.plan.pool_model import PoolModel
from tidegate.plan.traces import TraceRequest

_EWMA = 0.2
"""The pool queue's smoothing of slot hold times (predicted_wait)."""
_EPS = 1e-9

Status = Literal["ok", "queue_full", "queue_timeout", "no_replica"]
"""``queue_full``: 429; ``queue_timeout`` and ``no_replica`` (no routed replica ready and
nobody queued, as the gateway refuses it): 503."""
ReplicaState = Literal["starting", "standby", "ready", "draining", "stopped"]

# Event kinds, in the order they run at one instant: work ends before the scaler looks, and the
# timeline sample sees the instant's final state.
_REPLICA, _LOADED, _EXPIRE, _ARRIVAL, _EVALUATE, _SAMPLE = range(6)


@dataclass(frozen=True, kw_only=True)
class QueueSettings:
    """The gateway's interactive class (``scheduling.interactive``)."""

    max_queue_depth: int = 256
    queue_timeout_s: float = 30.0
    ttft_target_s: float | None = 2.0
    """Sets the predicted_wait target (``prescale_fraction`` of it), as in the gateway."""

    @classmethod
    def from_config(cls, interactive: QueueClassConfig) -> QueueSettings:
        return cls(
            max_queue_depth=interactive.max_queue_depth,
            queue_timeout_s=interactive.queue_timeout_s,
            ttft_target_s=interactive.ttft_target_s,
        )


@dataclass(frozen=True)
class PolicySpec:
    """A named policy: an ``AutoscalingPolicy`` (its ``enabled`` is not looked at: the
    simulator always executes it) or a fixed replica count."""

    name: str
    policy: AutoscalingPolicy | None = None
    fixed: int | None = None

    def __post_init__(self) -> None:
        if (self.policy is None) == (self.fixed is None):
            raise ValueError("a PolicySpec holds either a policy or a fixed replica count")
        if self.fixed is not None and self.fixed < 1:
            raise ValueError(f"a fixed pool needs at least one replica, not {self.fixed}")

    @classmethod
    def fixed_pool(cls, replicas: int) -> PolicySpec:
        return cls(f"fixed:{replicas}", fixed=replicas)


@dataclass(slots=True)
class RequestOutcome:
    arrival_s: float
    prompt_tokens: int
    completion_tokens: int
    status: Status = "ok"
    granted_s: float | None = None
    first_token_s: float | None = None
    end_s: float | None = None
    replica: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def queue_wait_s(self) -> float | None:
        return None if self.granted_s is None else self.granted_s - self.arrival_s

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_s is None else self.first_token_s - self.arrival_s

    @property
    def e2e_s(self) -> float | None:
        return None if self.end_s is None else self.end_s - self.arrival_s


@dataclass(frozen=True, slots=True)
class TimelinePoint:
    t: float
    desired: int
    """Routed replicas the policy wants (a fixed pool: its count)."""
    ready: int
    """Routed replicas ready."""
    standby: int
    starting: int
    draining: int
    waiting: int
    in_flight: int


@dataclass(frozen=True, slots=True)
class ScaleEvent:
    t: float
    direction: Literal["up", "down"]
    reason: str
    desired_from: int
    desired_to: int


@dataclass(slots=True)
class ReplicaLife:
    id: int
    started_s: float
    ready_s: float | None = None
    first_request_s: float | None = None
    stopped_s: float | None = None


@dataclass(frozen=True, kw_only=True)
class SimulationResult:
    name: str
    requests: list[RequestOutcome]
    timeline: list[TimelinePoint]
    events: list[ScaleEvent]
    replicas: list[ReplicaLife]
    duration_s: float

    @property
    def replica_hours(self) -> float:
        """Every replica from its start to its stop (loading and draining count: they hold
        the accelerator)."""
        end = self.duration_s
        return (
            sum((end if r.stopped_s is None else r.stopped_s) - r.started_s for r in self.replicas)
            / 3600.0
        )

    def count(self, status: Status) -> int:
        return sum(1 for r in self.requests if r.status == status)

    def ttft_percentile(self, q: float) -> float | None:
        """TTFT of the answered requests at percentile ``q`` (seconds); None: none answered."""
        return percentile([v for r in self.requests if (v := r.ttft_s) is not None], q)


# -- the model's parts ---------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Replica:
    life: ReplicaLife
    state: ReplicaState
    role: Literal["routed", "standby"]
    """What a starting replica becomes when loaded."""
    work: float = 0.0
    """Virtual clock: solo-seconds of work each running request has received."""
    last_t: float = 0.0
    running: list[tuple[float, int, RequestOutcome, bool]] = field(default_factory=list)
    """Heap of (work at the next milestone, tie-break, request, decoding?)."""
    held: deque[RequestOutcome] = field(default_factory=deque)
    """Granted but beyond max_concurrency: waiting inside the engine."""
    version: int = 0


def _load(replica: _Replica) -> int:
    """Requests on the replica: running and waiting inside it."""
    return len(replica.running) + len(replica.held)


class _Simulation:
    def __init__(
        self,
        trace: Sequence[TraceRequest],
        pool: PoolModel,
        spec: PolicySpec,
        queue: QueueSettings,
    ) -> None:
        self.pool, self.spec, self.queue = pool, spec, queue
        self.requests = [RequestOutcome(r.t, r.prompt_tokens, r.completion_tokens) for r in trace]
        self.events: list[tuple[float, int, int, object]] = []
        self.seq = itertools.count()
        self.replicas: list[_Replica] = []
        self.counts: dict[ReplicaState, int] = dict.fromkeys(
            ("starting", "standby", "ready", "draining", "stopped"), 0
        )
        """Replicas per state, kept by ``_set_state``."""
        self.waiting: deque[RequestOutcome] = deque()
        self.n_waiting = 0
        self.in_flight = 0
        self.hold_ewma: float | None = None
        self.seen_since_sample = False
        self.pending = len(self.requests)
        """Requests not yet answered (ended, refused or timed out)."""
        self.end_s = 0.0
        self.timeline: list[TimelinePoint] = []
        self.scale_events: list[ScaleEvent] = []
        self.decider: ScalingDecider | None = None
        self.host = 1.0
        """Each replica's share of the host now (``PoolModel.host_factor``)."""
        policy = spec.policy
        if policy is None:
            assert spec.fixed is not None
            self.desired = spec.fixed
            routed, standby = spec.fixed, 0
        else:
            target = effective_target(policy, queue.ttft_target_s)
            self.decider = ScalingDecider(policy, target=target)
            self.desired = self.decider.desired_routed
            routed, standby = self.desired, self.decider.desired_standby
        for _ in range(routed):
            self._spawn(0.0, "routed", loaded=True)
        for _ in range(standby):
            self._spawn(0.0, "standby", loaded=True)

    # -- events -------------------------------------------------------------------------------

    def push(self, t: float, kind: int, payload: object = None) -> None:
        heapq.heappush(self.events, (t, kind, next(self.seq), payload))

    def run(self) -> SimulationResult:
        for request in self.requests:
            self.push(request.arrival_s, _ARRIVAL, request)
        self.push(0.0, _SAMPLE)
        if self.spec.policy is not None:
            self.push(self.spec.policy.evaluation_interval_s, _EVALUATE)
        now = 0.0
        while self.events and self.pending:
            now, kind, _, payload = heapq.heappop(self.events)
            if kind == _REPLICA:
                assert isinstance(payload, tuple)
                replica, version = payload
                if version == replica.version:
                    self._progress(replica, now)
            elif kind == _LOADED:
                assert isinstance(payload, _Replica)
                self._loaded(payload, now)
            elif kind == _EXPIRE:
                assert isinstance(payload, RequestOutcome)
                self._expire(payload, now)
            elif kind == _ARRIVAL:
                assert isinstance(payload, RequestOutcome)
                self._arrive(payload, now)
            elif kind == _EVALUATE:
                self._evaluate(now)
                if self.pending:
                    assert self.spec.policy is not None
                    self.push(now + self.spec.policy.evaluation_interval_s, _EVALUATE)
            elif kind == _SAMPLE:
                self._sample(now)
                if self.pending:
                    self.push(math.floor(now) + 1.0, _SAMPLE)
        # The run ends with its last request (stale timers past it are not looked at).
        now = self.end_s
        if not self.timeline or self.timeline[-1].t < now:
            self._sample(now)
        return SimulationResult(
            name=self.spec.name,
            requests=self.requests,
            timeline=self.timeline,
            events=self.scale_events,
            replicas=[r.life for r in self.replicas],
            duration_s=now,
        )

    # -- the gateway's queue ------------------------------------------------------------------

    def _capacity(self) -> int:
        return self.pool.max_concurrency * self.counts["ready"]

    def _arrive(self, request: RequestOutcome, now: float) -> None:
        self.seen_since_sample = True
        if self.n_waiting:
            self._dispatch(now)
        if not self.n_waiting:
            capacity = self._capacity()
            if capacity == 0:  # the gateway's NoReadyReplicaError; the autoscaler sees it
                request.status = "no_replica"
                self._answered(now)
                return
            if self.in_flight < capacity:
                self._grant(request, now)
                return
        if self.n_waiting >= self.queue.max_queue_depth:
            request.status = "queue_full"
            self._answered(now)
            return
        self.waiting.append(request)
        self.n_waiting += 1
        self.push(now + self.queue.queue_timeout_s, _EXPIRE, request)

    def _expire(self, request: RequestOutcome, now: float) -> None:
        if request.granted_s is None and request.status == "ok":
            request.status = "queue_timeout"
            self.n_waiting -= 1
            self._answered(now)

    def _answered(self, now: float) -> None:
        self.pending -= 1
        self.end_s = max(self.end_s, now)

    def _dispatch(self, now: float) -> None:
        capacity = self._capacity()
        while self.n_waiting and self.in_flight < capacity:
            request = self.waiting.popleft()
            if request.status != "ok":
                continue  # timed out while queued
            self.n_waiting -= 1
            self._grant(request, now)

    def _grant(self, request: RequestOutcome, now: float) -> None:
        # Least outstanding, the first on ties (the gateway's power of two choices is the same
        # for two replicas and close to it for more).
        replica = min((r for r in self.replicas if r.state == "ready"), key=_load)
        request.granted_s = now
        request.replica = replica.life.id
        if replica.life.first_request_s is None:
            replica.life.first_request_s = now
        self.in_flight += 1
        if len(replica.running) < self.pool.max_concurrency:
            self._start(replica, request, now)
        else:
            replica.held.append(request)

    def _release(self, request: RequestOutcome, now: float) -> None:
        self.in_flight -= 1
        self._answered(now)
        assert request.granted_s is not None
        held = now - request.granted_s
        ewma = self.hold_ewma
        self.hold_ewma = held if ewma is None else ewma + _EWMA * (held - ewma)

    # -- replicas -----------------------------------------------------------------------------

    def _spawn(self, now: float, role: Literal["routed", "standby"], *, loaded: bool) -> None:
        life = ReplicaLife(id=len(self.replicas), started_s=now)
        replica = _Replica(life=life, state="starting", role=role, last_t=now)
        self.replicas.append(replica)
        self.counts["starting"] += 1
        if loaded:
            self._loaded(replica, now)
        else:
            busy = any(r.state == "ready" and _load(r) for r in self.replicas)
            self.push(now + self.pool.cold_start_for(busy=busy), _LOADED, replica)
            self._host_changed(now)

    def _loaded(self, replica: _Replica, now: float) -> None:
        if replica.state != "starting":
            return  # cancelled while loading
        replica.life.ready_s = now
        if replica.role == "routed":
            self._set_state(replica, "ready", now)
            self._dispatch(now)
        else:
            self._set_state(replica, "standby", now)

    def _advance(self, replica: _Replica, now: float) -> None:
        if replica.running:
            speed = self.pool.speed(len(replica.running)) * self.host
            replica.work += (now - replica.last_t) * speed
        replica.last_t = now

    def _reschedule(self, replica: _Replica) -> None:
        replica.version += 1
        if replica.running:
            left = max(0.0, replica.running[0][0] - replica.work)
            at = replica.last_t + left / (self.pool.speed(len(replica.running)) * self.host)
            self.push(at, _REPLICA, (replica, replica.version))

    def _start(self, replica: _Replica, request: RequestOutcome, now: float) -> None:
        self._advance(replica, now)
        milestone = replica.work + self.pool.prefill_work_s(request.prompt_tokens)
        heapq.heappush(replica.running, (milestone, next(self.seq), request, False))
        self._reschedule(replica)

    def _progress(self, replica: _Replica, now: float) -> None:
        self._advance(replica, now)
        ended = False
        while replica.running and replica.running[0][0] <= replica.work + _EPS:
            milestone, _, request, decoding = heapq.heappop(replica.running)
            if not decoding:
                request.first_token_s = now
                done_at = milestone + self.pool.decode_work_s(request.completion_tokens)
                heapq.heappush(replica.running, (done_at, next(self.seq), request, True))
                continue
            request.end_s = now
            self._release(request, now)
            ended = True
            if replica.held:
                held = replica.held.popleft()
                start = replica.work + self.pool.prefill_work_s(held.prompt_tokens)
                heapq.heappush(replica.running, (start, next(self.seq), held, False))
        self._reschedule(replica)
        if replica.state == "draining" and not _load(replica):
            self._stop(replica, now)
        if ended and self.n_waiting:
            self._dispatch(now)

    def _stop(self, replica: _Replica, now: float) -> None:
        self._set_state(replica, "stopped", now)
        replica.life.stopped_s = now

    # -- scaling ------------------------------------------------------------------------------

    def _count(self, state: ReplicaState) -> int:
        return self.counts[state]

    def _set_state(self, member: _Replica, state: ReplicaState, now: float) -> None:
        # ``member``, not ``replica``: a simulated replica is not routing's Replica, whose fields
        # only its own methods write (test_replica_owner checks the name).
        self.counts[member.state] -= 1
        self.counts[state] += 1
        member.state = state
        self._host_changed(now)

    def _host_changed(self, now: float) -> None:
        """Replicas became active or idle on a shared host: every running request's speed
        changes, so each replica's work so far is booked at the old speed, its next milestone
        at the new one."""
        if self.pool.host_speedup is None:
            return
        counts = self.counts
        active = counts["ready"] + counts["draining"] + self.pool.loading_load * counts["starting"]
        host = self.pool.host_factor(active)
        if host == self.host:
            return
        busy = [r for r in self.replicas if r.running]
        for member in busy:
            self._advance(member, now)
        self.host = host
        for member in busy:
            self._reschedule(member)

    def _signal(self, policy: AutoscalingPolicy, routed_ready: int) -> float:
        predicted = 0.0
        capacity, hold = self._capacity(), self.hold_ewma
        if hold is not None and capacity:
            # PoolQueue.predicted_wait_s: the queue ahead (and this one) at capacity / hold.
            predicted = (self.n_waiting + 1) * hold / capacity
        return signal_value(
            policy.signal,
            ready=routed_ready,
            waiting=self.n_waiting,
            in_flight=self.in_flight,
            predicted_wait_s=predicted,
        )

    def _evaluate(self, now: float) -> None:
        decider, policy = self.decider, self.spec.policy
        assert decider is not None and policy is not None
        routed_ready = self._count("ready")
        sample = ScalingSample(
            now=now,
            routed_ready=routed_ready,
            standby_ready=self._count("standby"),
            starting=self._count("starting"),
            signal_value=self._signal(policy, routed_ready),
            # As the supervisor: a request arrived, or some wait or run (the idle clock).
            requests_seen=self.seen_since_sample or self.n_waiting > 0 or self.in_flight > 0,
        )
        self.seen_since_sample = False
        decision = decider.decide(sample)
        if decision.desired_routed != self.desired and decision.reason is not None:
            direction: Literal["up", "down"] = (
                "up" if decision.desired_routed > self.desired else "down"
            )
            self.scale_events.append(
                ScaleEvent(now, direction, decision.reason, self.desired, decision.desired_routed)
            )
        self.desired = decision.desired_routed
        self._apply(decision, policy, now)

    def _apply(self, decision: ScalingDecision, policy: AutoscalingPolicy, now: float) -> None:
        routed = [r for r in self.replicas if r.state == "ready"]
        loading = [r for r in self.replicas if r.state == "starting" and r.role == "routed"]
        have = len(routed) + len(loading)
        while have < decision.desired_routed:
            standby = next((r for r in self.replicas if r.state == "standby"), None)
            standby_loading = next(
                (r for r in self.replicas if r.state == "starting" and r.role == "standby"), None
            )
            if standby is not None:
                standby.role = "routed"
                self._set_state(standby, "ready", now)  # promoted: no load wait
                self._dispatch(now)
            elif standby_loading is not None:
                standby_loading.role = "routed"  # routed as soon as it is loaded
            elif self._occupied() < policy.max_replicas:
                self._spawn(now, "routed", loaded=False)
            else:
                break
            have += 1
        while have > decision.desired_routed:
            # As the supervisor retires: one still loading first, then the least busy, then
            # the highest index.
            if loading:
                self._stop(loading.pop(), now)
            else:
                victim = min(
                    (r for r in self.replicas if r.state == "ready"),
                    key=lambda r: (_load(r), -r.life.id),
                )
                self._set_state(victim, "draining", now)
                if not _load(victim):
                    self._stop(victim, now)
            have -= 1
        standbys = [
            r for r in self.replicas if r.role == "standby" and r.state in ("standby", "starting")
        ]
        standbys.sort(key=lambda r: (r.state == "starting", r.life.id))
        while len(standbys) > decision.desired_standby:
            self._stop(standbys.pop(), now)  # loading ones first, then the highest index
        for _ in range(decision.desired_standby - len(standbys)):
            if self._occupied() >= policy.max_replicas:
                break
            self._spawn(now, "standby", loaded=False)

    def _occupied(self) -> int:
        """Replicas with a process, draining ones included (as in the supervisor, a new one
        never shares a draining one's cores): what max_replicas bounds."""
        return len(self.replicas) - self.counts["stopped"]

    def _sample(self, now: float) -> None:
        self.timeline.append(
            TimelinePoint(
                t=now,
                desired=self.desired,
                ready=self._count("ready"),
                standby=self._count("standby"),
                starting=self._count("starting"),
                draining=self._count("draining"),
                waiting=self.n_waiting,
                in_flight=self.in_flight,
            )
        )


def simulate(
    trace: Sequence[TraceRequest],
    pool: PoolModel,
    policy: PolicySpec | AutoscalingPolicy | int,
    *,
    queue: QueueSettings | None = None,
    name: str | None = None,
) -> SimulationResult:
    """Replay ``trace`` against ``pool`` under ``policy`` (a ``PolicySpec``, an
    ``AutoscalingPolicy``, or a fixed replica count) and the gateway queue ``queue``.

    Deterministic: the same inputs give the same result. ``name`` labels the result (default:
    the spec's name, ``autoscaling`` or ``fixed:N``)."""
    if isinstance(policy, int):
        spec = PolicySpec.fixed_pool(policy)
    elif isinstance(policy, AutoscalingPolicy):
        spec = PolicySpec("autoscaling", policy=policy)
    else:
        spec = policy
    if name is not None:
        spec = PolicySpec(name, policy=spec.policy, fixed=spec.fixed)
    if not trace:
        raise ValueError("the trace holds no requests")
    return _Simulation(trace, pool, spec, queue or QueueSettings()).run()
