"""`tidegate traffic` through Typer's CliRunner on a real store (SQLite and PostgreSQL), with
the pools of a config file: the same checks and audit rows as the admin API."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select
from typer.testing import CliRunner, Result

from tidegate.commands.traffic import traffic_app
from tidegate.rollout.versions import VersionService
from tidegate.store import create_engine, create_sessionmaker, migrate
from tidegate.store.models import AuditEvent, TrafficPolicy
from tidegate.tenancy.actors import Actor


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "tidegate.yaml"
    upstreams = [
        {"url": f"http://127.0.0.1:{port}/v1", "model": "chat", "pool": pool}
        for port, pool in ((1, "stable"), (2, "candidate"))
    ]
    config = {"engines": {"replicas": 0}, "upstreams": upstreams}
    path.write_text(yaml.safe_dump(config))
    return path


def invoke(tmp_path: Path, store_url: str, config: Path, *args: str) -> Result:
    env = {
        "TIDEGATE_HOME": str(tmp_path),
        "TIDEGATE_STORE__URL": store_url,
        "TIDEGATE_CONFIG": None,
        "COLUMNS": "200",
    }
    return CliRunner().invoke(traffic_app, [*args, "--config", str(config)], env=env)  # type: ignore[arg-type]


async def stored(store_url: str) -> tuple[list[tuple[str, str]], TrafficPolicy | None]:
    engine = create_engine(store_url)
    try:
        async with create_sessionmaker(engine)() as session:
            rows = await session.scalars(select(AuditEvent).order_by(AuditEvent.id))
            audit = [(row.action, row.actor) for row in rows]
            return audit, await session.get(TrafficPolicy, "chat")
    finally:
        await engine.dispose()


def test_split_shadow_rollback_and_versions(
    tmp_path: Path, store_url: str, config_file: Path
) -> None:
    split = invoke(
        tmp_path, store_url, config_file, "split", "chat", "candidate=5", "stable=95",
        "--sticky", "tenant",
    )  # fmt: skip
    assert split.exit_code == 0, split.output
    assert "candidate" in split.stdout and "5.0%" in split.stdout and "95.0%" in split.stdout
    assert "sticky by tenant" in split.stdout
    assert "within 2 s" in split.stderr

    shadow = invoke(
        tmp_path, store_url, config_file, "shadow", "chat", "candidate", "--sample", "0.2"
    )
    assert shadow.exit_code == 0, shadow.output
    assert "shadow: candidate at 20%" in shadow.stdout
    off = invoke(tmp_path, store_url, config_file, "shadow", "chat", "--off")
    assert off.exit_code == 0 and "shadow:" not in off.stdout

    shown = invoke(tmp_path, store_url, config_file, "show", "chat")
    assert shown.exit_code == 0 and "revision 3" in shown.stdout

    rolled = invoke(tmp_path, store_url, config_file, "rollback", "chat")
    assert rolled.exit_code == 0, rolled.output
    assert "All traffic of chat goes to stable." in rolled.stderr

    audit, policy = asyncio.run(stored(store_url))
    user = Actor.cli().name
    assert audit == [
        ("traffic.split_changed", user),
        ("traffic.shadow_changed", user),
        ("traffic.shadow_changed", user),
        ("traffic.rolled_back", user),
    ]
    assert policy is not None and policy.weights == [["stable", 100.0]]

    async def register() -> None:
        engine = create_engine(store_url)
        try:
            versions = VersionService(sessions=create_sessionmaker(engine), keep=5)
            await versions.register("chat", "candidate", "org/chat-v2", "abc", actor=Actor.cli())
        finally:
            await engine.dispose()

    asyncio.run(register())
    listed = invoke(tmp_path, store_url, config_file, "versions", "chat")
    assert listed.exit_code == 0, listed.output
    assert "org/chat-v2" in listed.stdout and "candidate" in listed.stdout


def test_mistakes_are_one_line_errors(tmp_path: Path, store_url: str, config_file: Path) -> None:
    asyncio.run(migrate(store_url))
    unknown_pool = invoke(tmp_path, store_url, config_file, "split", "chat", "nope=5")
    assert unknown_pool.exit_code == 1
    assert "Unknown pool 'nope'. Pools on this gateway: candidate, stable." in unknown_pool.stderr
    unknown_model = invoke(tmp_path, store_url, config_file, "show", "gpt-9")
    assert (
        unknown_model.exit_code == 1 and "The model 'gpt-9' does not exist" in unknown_model.stderr
    )
    not_a_pair = invoke(tmp_path, store_url, config_file, "split", "chat", "stable")
    assert not_a_pair.exit_code == 2 and "POOL=WEIGHT" in not_a_pair.output
    neither = invoke(tmp_path, store_url, config_file, "shadow", "chat")
    assert neither.exit_code == 2 and "--off" in neither.output
    bad_sample = invoke(
        tmp_path, store_url, config_file, "shadow", "chat", "candidate", "--sample", "3"
    )
    assert bad_sample.exit_code == 1 and "from 0 to 1" in bad_sample.stderr
    audit, policy = asyncio.run(stored(store_url))
    assert audit == [] and policy is None
