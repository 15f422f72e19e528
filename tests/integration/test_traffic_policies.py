"""Traffic policies, their sync into a routing table, and version records, on a real store
(SQLite and PostgreSQL): the services the admin API and the CLI use, without HTTP."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.config import Config
from tidegate.errors import InvalidRequestError, ModelNotFoundError, PermissionDeniedError
from tidegate.rollout.metrics import RolloutMetrics
from tidegate.rollout.policies import TrafficPolicies
from tidegate.rollout.sync import PolicySync
from tidegate.rollout.versions import VersionService
from tidegate.routing.replicas import Pool, RoutingTable
from tidegate.routing.rules import Route
from tidegate.store.models import AuditEvent, ModelVersion, Rollout, TrafficPolicy
from tidegate.tenancy.actors import Actor

OPERATOR = Actor.internal("test")
TENANT_ADMIN = Actor(name="acme admin", key_id="key_x", tenant_id="ten_acme")


def routing_table(*pools: str) -> RoutingTable:
    routing = RoutingTable(routes=[Route(model="chat", pools=("stable", "candidate"))])
    for name in ("stable", "candidate", *pools):
        routing.add_pool(Pool(name))
    return routing


class Setup:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], routing: RoutingTable) -> None:
        self.sessions = sessions
        self.routing = routing
        self.registry = CollectorRegistry()
        self.sync = PolicySync(
            sessions=sessions,
            routing=routing,
            interval_s=0.05,
            metrics=RolloutMetrics(self.registry),
        )
        self.policies = TrafficPolicies(sessions=sessions, routing=routing, sync=self.sync)

    def share(self, pool: str, model: str = "chat") -> float | None:
        return self.registry.get_sample_value(
            "tidegate_traffic_share", {"model": model, "pool": pool}
        )

    async def audit(self) -> list[tuple[str, str, dict[str, Any]]]:
        async with self.sessions() as session:
            rows = await session.scalars(select(AuditEvent).order_by(AuditEvent.id))
            return [(row.action, row.target_id, row.details) for row in rows]


@pytest.fixture
def setup(sessions: async_sessionmaker[AsyncSession]) -> Setup:
    return Setup(sessions, routing_table("other"))


async def add_rollout(
    sessions: async_sessionmaker[AsyncSession], state: str = "running", rollout_id: str = "ro_1"
) -> None:
    now = datetime.now(UTC)
    async with sessions.begin() as session:
        session.add(
            Rollout(
                id=rollout_id,
                model="chat",
                stable_pool="stable",
                candidate_pool="candidate",
                steps=[5, 25, 100],
                hold_s=60.0,
                gates={},
                state=state,
                step_index=1,
                step_started_at=now,
                history=[],
                created_at=now,
                created_by="cli:test",
                updated_at=now,
            )
        )


async def test_a_split_is_stored_audited_and_applied_at_once(setup: Setup) -> None:
    info = await setup.policies.set_split(
        "chat", [("candidate", 5), ("stable", 95)], "tenant", actor=OPERATOR
    )
    assert info.weights == (("candidate", 5.0), ("stable", 95.0))
    assert info.stable_pool == "stable"  # the route's first pool by default
    assert info.sticky_by == "tenant" and info.revision == 1
    assert info.shares() == pytest.approx({"candidate": 0.05, "stable": 0.95})
    split = setup.routing.route("chat").split
    assert split is not None and split.sticky_by == "tenant"
    assert split.share("candidate") == pytest.approx(0.05)
    assert setup.share("candidate") == pytest.approx(0.05)
    assert setup.share("stable") == pytest.approx(0.95)
    [(action, target, details)] = await setup.audit()
    assert (action, target) == ("traffic.split_changed", "chat")
    assert details["weights"] == [["candidate", 5.0], ["stable", 95.0]]
    assert details["sticky_by"] == "tenant"
    assert [p.model for p in await setup.policies.list()] == ["chat"]

    # another policy change through the store: applied on the next sync
    again = await setup.policies.set_split("chat", [("stable", 1)], actor=OPERATOR)
    assert again.sticky_by == "tenant" and again.revision == 2  # kept
    assert setup.share("candidate") is None  # no series for a pool left out
    async with setup.sessions.begin() as session:
        await session.execute(delete(TrafficPolicy))
    await setup.sync.sync_now()
    assert setup.routing.route("chat").split is None
    assert setup.share("stable") is None


async def test_unknown_models_and_pools_are_skipped_until_they_exist(setup: Setup) -> None:
    now = datetime.now(UTC)
    async with setup.sessions.begin() as session:
        for model, weights in (
            ("ghost", [["stable", 1]]),
            ("chat", [["late", 50], ["stable", 50]]),
        ):
            session.add(
                TrafficPolicy(
                    model=model,
                    stable_pool="stable",
                    weights=weights,
                    sticky_by="session",
                    shadow_sample=0.0,
                    revision=3,
                    updated_at=now,
                    updated_by="x",
                )
            )
    await setup.sync.sync_now()
    split = setup.routing.route("chat").split
    assert split is not None and split.weights == (("stable", 50.0),)
    setup.routing.add_pool(Pool("late"))  # a local pool joins later: same revision, re-applied
    await setup.sync.sync_now()
    split = setup.routing.route("chat").split
    assert split is not None and split.share("late") == pytest.approx(0.5)


async def test_shadow_and_active_rollouts_are_watched(setup: Setup) -> None:
    assert setup.sync.watched == frozenset()
    info = await setup.policies.set_shadow("chat", "other", 0.25, actor=OPERATOR)
    assert (info.shadow_pool, info.shadow_sample, info.weights) == ("other", 0.25, ())
    shadow = setup.sync.shadow_for("chat")
    assert shadow is not None and (shadow.pool, shadow.sample) == ("other", 0.25)
    assert setup.routing.route("chat").split is None  # a shadow alone splits nothing
    assert setup.sync.watched == {"chat"}
    await setup.policies.set_shadow("chat", None, actor=OPERATOR)
    assert setup.sync.shadow_for("chat") is None and setup.sync.watched == frozenset()
    actions = [action for action, _, _ in await setup.audit()]
    assert actions == ["traffic.shadow_changed", "traffic.shadow_changed"]

    await add_rollout(setup.sessions, "paused")
    await setup.sync.sync_now()
    rollout = setup.sync.rollout_for("chat")
    assert rollout is not None and not rollout.running and rollout.step_index == 1
    assert setup.sync.watched == {"chat"}


async def test_bad_input_is_refused_with_a_clear_message(setup: Setup) -> None:
    policies = setup.policies
    cases: list[tuple[list[tuple[str, float]], str | None, str]] = [
        ([("nope", 5), ("stable", 95)], None, "Pools on this gateway: candidate, other, stable"),
        ([("stable", -1)], None, ">= 0"),
        ([("stable", 0), ("candidate", 0)], None, "weight > 0"),
        ([], None, "at least one pool"),
        ([("stable", 1), ("stable", 2)], None, "twice"),
        ([("stable", 1)], "cookie", "sticky_by must be 'session'"),
    ]
    for weights, sticky, message in cases:
        with pytest.raises(InvalidRequestError, match=message):
            await policies.set_split("chat", weights, sticky, actor=OPERATOR)
    with pytest.raises(InvalidRequestError, match="Unknown pool 'nope'"):
        await policies.set_split("chat", [("stable", 1)], stable_pool="nope", actor=OPERATOR)
    with pytest.raises(InvalidRequestError, match="from 0 to 1"):
        await policies.set_shadow("chat", "other", 1.5, actor=OPERATOR)
    with pytest.raises(ModelNotFoundError):
        await policies.set_split("gpt-9", [("stable", 1)], actor=OPERATOR)
    with pytest.raises(PermissionDeniedError):
        await policies.rollback("chat", actor=TENANT_ADMIN)
    assert await setup.audit() == []


async def test_rollback_ends_the_rollout_and_restores_the_stable_pool(setup: Setup) -> None:
    await setup.policies.set_split("chat", [("candidate", 25), ("stable", 75)], actor=OPERATOR)
    await add_rollout(setup.sessions)
    with pytest.raises(InvalidRequestError, match="Rollout ro_1 of 'chat' is running"):
        await setup.policies.set_split("chat", [("candidate", 50)], actor=OPERATOR)
    await setup.sync.sync_now()
    assert setup.sync.rollout_for("chat") is not None

    result = await setup.policies.rollback("chat", actor=OPERATOR)
    assert result.rolled_back == ("ro_1",)
    assert result.traffic.weights == (("stable", 100.0),) and result.traffic.rollout is None
    split = setup.routing.route("chat").split
    assert split is not None and split.share("stable") == 1.0  # in this gateway at once
    assert setup.sync.rollout_for("chat") is None
    async with setup.sessions() as session:
        row = await session.get(Rollout, "ro_1")
    assert row is not None and row.state == "rolled_back" and row.finished_at is not None
    assert row.reason == f"rolled back by {OPERATOR.name}"
    assert row.history[-1]["from"] == "running" and row.history[-1]["to"] == "rolled_back"
    actions = [action for action, _, _ in await setup.audit()]
    assert actions == ["traffic.split_changed", "rollout.rolled_back", "traffic.rolled_back"]

    again = await setup.policies.rollback("chat", actor=OPERATOR)  # nothing left to end
    assert again.rolled_back == ()


async def test_rollback_without_a_policy_goes_to_the_routes_first_pool(setup: Setup) -> None:
    result = await setup.policies.rollback("chat", actor=OPERATOR)
    assert result.traffic.stable_pool == "stable"
    assert result.traffic.weights == (("stable", 100.0),)


async def test_a_store_error_in_the_loop_keeps_the_last_state(setup: Setup) -> None:
    await setup.policies.set_split("chat", [("candidate", 10), ("stable", 90)], actor=OPERATOR)
    await setup.sync.start()
    try:
        async with setup.sessions.begin() as session:
            await session.execute(text("DROP TABLE traffic_policies"))
        await asyncio.sleep(0.3)  # several failed rounds
        assert setup.sync.running
        split = setup.routing.route("chat").split
        assert split is not None and split.share("candidate") == pytest.approx(0.1)
    finally:
        await setup.sync.stop()


# -- versions -------------------------------------------------------------------------------------


def version_config(tmp_path: Path, *, max_num_seqs: int = 8) -> Config:
    model_dir = tmp_path / "model"
    model_dir.mkdir(exist_ok=True)
    (model_dir / "config.json").write_text("{}")
    (model_dir / "model.safetensors").write_bytes(b"x" * 10)
    return Config(
        home=tmp_path,
        engines={
            "replicas": 1,
            "model": str(model_dir),
            "served_model_name": "chat",
            "pools": [{"name": "candidate", "profile": {"max_num_seqs": max_num_seqs}}],
        },
        upstreams=[
            {"url": "http://127.0.0.1:1/v1", "model": "chat", "pool": "remote"},
            {"url": "http://127.0.0.1:2/v1", "model": "chat", "pool": "remote"},
            {"url": "http://127.0.0.1:3/v1", "model": "gpt", "upstream_model": "gpt-4o"},
        ],
    )


async def versions_in_store(sessions: async_sessionmaker[AsyncSession]) -> list[ModelVersion]:
    async with sessions() as session:
        return list(await session.scalars(select(ModelVersion).order_by(ModelVersion.id)))


async def test_startup_records_each_pool_once_and_new_fingerprints_again(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    versions = VersionService(sessions=sessions, keep=10)
    config = version_config(tmp_path)
    # several gateways starting at once record each pool once
    await asyncio.gather(*(versions.record_config(config) for _ in range(3)))
    rows = await versions_in_store(sessions)
    assert sorted((r.model, r.pool) for r in rows) == [
        ("chat", "candidate"),
        ("chat", "chat"),
        ("chat", "remote"),
        ("gpt", "gpt"),
    ]
    by_pool = {r.pool: r for r in rows}
    assert by_pool["chat"].source == str(tmp_path / "model")
    assert by_pool["chat"].revision.startswith("files:")
    assert by_pool["chat"].profile_hash != by_pool["candidate"].profile_hash
    assert len(by_pool["chat"].profile_hash) == 16
    assert (by_pool["gpt"].source, by_pool["gpt"].revision) == ("gpt-4o", "")
    assert by_pool["chat"].created_by == "tidegate:startup"

    await versions.record_config(config)  # a restart with nothing new
    assert len(await versions_in_store(sessions)) == 4
    await versions.record_config(version_config(tmp_path, max_num_seqs=16))
    listed = await versions.list("chat")
    assert len(listed) == 4 and listed[0].pool == "candidate"  # newest first
    (tmp_path / "model" / "model.safetensors").write_bytes(b"x" * 11)  # new weights
    await versions.record_config(config)
    assert [v.pool for v in (await versions.list("chat"))[:2]] == ["candidate", "chat"]


async def test_versions_are_pruned_and_registrations_checked(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    versions = VersionService(sessions=sessions, keep=3, routing=routing_table())
    for n in range(5):
        info = await versions.register(
            "chat", "candidate", f"org/model-v{n}", f"r{n}", actor=OPERATOR
        )
        assert info.id.startswith("ver_")
    listed = await versions.list("chat")
    assert [v.source for v in listed] == ["org/model-v4", "org/model-v3", "org/model-v2"]
    async with sessions() as session:
        actions = list(await session.scalars(select(AuditEvent.action)))
    assert actions == ["version.registered"] * 5
    with pytest.raises(InvalidRequestError, match="Unknown pool 'nope'"):
        await versions.register("chat", "nope", "x", actor=OPERATOR)
    with pytest.raises(InvalidRequestError, match="'source' needs 1 to 1000"):
        await versions.register("chat", "stable", " ", actor=OPERATOR)
    with pytest.raises(ModelNotFoundError):
        await versions.list("gpt-9")
    with pytest.raises(PermissionDeniedError):
        await versions.register("chat", "stable", "x", actor=TENANT_ADMIN)
