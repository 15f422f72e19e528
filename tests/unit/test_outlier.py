"""Passive outlier ejection: thresholds, backoff doubling, the ejected-share cap, reset."""

from __future__ import annotations

from tidegate.config import HealthConfig
from tidegate.routing.outlier import OutlierDetector
from tidegate.routing.replica import Replica, ReplicaState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _replicas(n: int) -> list[Replica]:
    return [
        Replica(
            id=f"r{i}",
            model="m",
            base_url=f"http://r{i}/v1",
            upstream_model="m",
            state=ReplicaState.READY,
        )
        for i in range(n)
    ]


def _detector(clock: Clock, **health: float) -> tuple[OutlierDetector, list[tuple[str, str]]]:
    ejected: list[tuple[str, str]] = []
    config = HealthConfig.model_validate(
        {
            "consecutive_failures": 3,
            "base_ejection_s": 1.0,
            "max_ejection_s": 5.0,
            "max_ejected_share": 0.5,
            **health,
        }
    )
    detector = OutlierDetector(
        config, on_eject=lambda pool, r: ejected.append((pool, r.id)), clock=clock
    )
    return detector, ejected


def test_consecutive_failures_eject_and_decisive_failures_eject_at_once() -> None:
    clock = Clock()
    detector, ejected = _detector(clock)
    pool = _replicas(4)
    a, b = pool[0], pool[1]
    assert not detector.record_failure("p", pool, a, decisive=False)
    assert not detector.record_failure("p", pool, a, decisive=False)
    assert detector.record_failure("p", pool, a, decisive=False)
    assert a.ejected_until == clock.now + 1.0 and a.consecutive_failures == 0
    # A refused connection: no server there, no need to wait for more evidence.
    assert detector.record_failure("p", pool, b, decisive=True)
    assert ejected == [("p", "r0"), ("p", "r1")]


def test_a_success_between_failures_restarts_the_count() -> None:
    clock = Clock()
    detector, _ = _detector(clock)
    pool = _replicas(2)
    replica = pool[0]
    for _ in range(2):
        detector.record_failure("p", pool, replica, decisive=False)
    OutlierDetector.record_success(replica)
    for _ in range(2):
        assert not detector.record_failure("p", pool, replica, decisive=False)
    assert replica.ejected_until == 0.0


def test_ejection_time_doubles_up_to_the_maximum_and_resets_on_success() -> None:
    clock = Clock()
    detector, _ = _detector(clock)
    pool = _replicas(2)
    replica = pool[0]
    durations = []
    for _ in range(5):
        assert detector.record_failure("p", pool, replica, decisive=True)
        durations.append(replica.ejected_until - clock.now)
        # While ejected, more failures (requests already in flight) change nothing.
        assert not detector.record_failure("p", pool, replica, decisive=True)
        clock.now = replica.ejected_until  # eligible again exactly when it runs out
    assert durations == [1.0, 2.0, 4.0, 5.0, 5.0]
    OutlierDetector.record_success(replica)
    assert replica.ejections == 0
    assert detector.record_failure("p", pool, replica, decisive=True)
    assert replica.ejected_until - clock.now == 1.0


def test_at_most_the_max_share_is_ejected_at_once() -> None:
    clock = Clock()
    detector, ejected = _detector(clock)
    pool = _replicas(4)
    results = [detector.record_failure("p", pool, r, decisive=True) for r in pool]
    assert results == [True, True, False, False]
    assert sum(r.ejected_until > clock.now for r in pool) == 2
    # Once an ejection runs out, another failing replica may take its place.
    clock.now += 1.0
    assert detector.record_failure("p", pool, pool[2], decisive=True)
    assert len(ejected) == 3


def test_a_pool_of_one_may_still_eject_its_replica() -> None:
    # max(1, ...): a lone replica that refuses connections is pointless to keep trying.
    clock = Clock()
    detector, _ = _detector(clock, max_ejected_share=0.1)
    pool = _replicas(1)
    assert detector.record_failure("p", pool, pool[0], decisive=True)
    assert not detector.record_failure("p", pool, pool[0], decisive=True)
