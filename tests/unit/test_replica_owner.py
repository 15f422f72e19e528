"""The replica owns its figures: outside ``routing/replica.py`` the server changes a replica only
through its methods, and the methods do what the health checker, outlier detection and the
engine scraper relied on when they wrote the fields themselves."""

from __future__ import annotations

import ast
from pathlib import Path

from tidegate.routing.replica import Replica, ReplicaState

SRC = Path(__file__).resolve().parents[2] / "src" / "tidegate"
OWNED = {
    "state",
    "ejected_until",
    "consecutive_failures",
    "ejections",
    "engine_waiting",
    "kv_cache_usage",
    "adapters",
}
"""Fields only the replica's methods write (``outstanding`` is the in-flight lease's)."""


def _replica_expression(node: ast.expr) -> bool:
    """``replica``, ``self.replica``, ``r``, ``pool.replicas[0]`` ...: what names a replica."""
    text = ast.unparse(node)
    return text in {"r", "replica"} or text.endswith((".replica", "replica")) or "replicas" in text


def _writes(source: str, where: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, where)):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            if (
                isinstance(target, ast.Attribute)
                and target.attr in OWNED
                and _replica_expression(target.value)
            ):
                found.append(f"{where}:{node.lineno}: {ast.unparse(target)}")
    return found


def test_no_package_assigns_a_replicas_fields() -> None:
    writes = [
        write
        for path in sorted(SRC.rglob("*.py"))
        if path != SRC / "routing" / "replica.py"
        for write in _writes(path.read_text(), str(path.relative_to(SRC)))
    ]
    assert writes == [], "call the Replica's methods instead:\n" + "\n".join(writes)


def test_the_check_sees_writes() -> None:
    source = (
        "replica.state = ReplicaState.READY\n"
        "self.replica.ejected_until = 0.0\n"
        "pool.replicas[0].kv_cache_usage = 0.5\n"
        "r.consecutive_failures += 1\n"
        "waiter.state = done\n"  # not a replica
    )
    assert [write.split(": ", 1)[1] for write in _writes(source, "example.py")] == [
        "replica.state",
        "self.replica.ejected_until",
        "pool.replicas[0].kv_cache_usage",
        "r.consecutive_failures",
    ]


def _replica() -> Replica:
    return Replica(id="r0", model="m", base_url="http://127.0.0.1:1/v1", upstream_model="m")


def test_state_moves_report_a_change() -> None:
    replica = _replica()
    assert replica.state is ReplicaState.STARTING and not replica.ready
    assert replica.mark_ready() is True
    assert replica.mark_ready() is False  # already ready
    assert replica.ready and replica.routable(now=0.0)
    assert replica.mark_unhealthy() is True
    assert not replica.routable(now=0.0)
    assert replica.mark_draining() is True
    assert replica.state is ReplicaState.DRAINING


def test_ejection_counts_towards_the_backoff_until_a_success() -> None:
    replica = _replica()
    replica.mark_ready()
    assert [replica.record_failure() for _ in range(3)] == [1, 2, 3]
    replica.eject(until=10.0)
    assert replica.consecutive_failures == 0  # the streak starts over
    assert replica.ejections == 1
    assert replica.ejected(now=9.9) and not replica.routable(now=9.9)
    assert not replica.ejected(now=10.0) and replica.routable(now=10.0)
    replica.eject(until=30.0)
    assert replica.ejections == 2
    replica.readmit()
    assert not replica.ejected(now=0.0)
    assert replica.ejections == 2  # readmission is not a success: the backoff stays
    replica.record_failure()
    replica.record_success()
    assert (replica.consecutive_failures, replica.ejections) == (0, 0)


def test_engine_load_keeps_what_a_scrape_did_not_say() -> None:
    replica = _replica()
    replica.record_engine_load(waiting=4, kv_cache_usage=0.5)
    replica.record_engine_load(waiting=None, kv_cache_usage=0.75)
    assert (replica.engine_waiting, replica.kv_cache_usage) == (4, 0.75)
    replica.record_engine_load(waiting=0, kv_cache_usage=None)
    assert (replica.engine_waiting, replica.kv_cache_usage) == (0, 0.75)


def test_backend_header_names_pool_and_replica() -> None:
    assert _replica().backend == b"m/r0"
    pooled = Replica(
        id="u1", model="m", pool="gpu", base_url="http://127.0.0.1:1/v1", upstream_model="m"
    )
    assert pooled.backend == b"gpu/u1"
