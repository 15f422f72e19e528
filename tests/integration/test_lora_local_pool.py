"""Configured LoRA adapters on a supervised local pool, its replica a fake vLLM started with the
LoRA flags of the real engine command (``--lora-modules`` as ``build_engine_command`` writes
them): the adapter sync learns what each replica's engine registered, adapter pools route to
it with the version's LoRA name, a runtime adapter is loaded on the running replica and again
after the replica crashed and its supervisor restarted it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tidegate.config import Config, LocalPool
from tidegate.engines.profile import EngineCommand, build_engine_command
from tidegate.engines.supervisor import EngineSupervisor
from tidegate.observability.metrics import GatewayMetrics
from tidegate.protocol.adapters import AdapterCreate
from tidegate.rollout.adapter_sync import AdapterSync
from tidegate.rollout.adapters import AdapterService
from tidegate.routing.build import build_routing
from tidegate.routing.replicas import RoutingTable
from tidegate.store import create_engine, create_sessionmaker, migrate
from tidegate.tenancy.actors import Actor
from tidegate.upstream.lora import loaded_adapters

SERVED = "smol"
V1 = "/adapters/support-bot-v1"


def lora_command(config: Config) -> Callable[[LocalPool, int], EngineCommand]:
    """The fake server, given the real command's LoRA modules."""

    def command(pool: LocalPool, port: int) -> EngineCommand:
        real = build_engine_command(
            config=config,
            model="/models/smol",
            port=port,
            device="cpu",
            profile=pool.profile,
            adapters=pool.adapters,
            max_loras=pool.max_loras,
        )
        assert real.env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
        argv = list(real.argv)
        start = argv.index("--lora-modules") + 1
        modules = [arg for arg in argv[start:] if not arg.startswith("--")]
        args = ["--port", str(port), "--model", SERVED, "--lora-modules", *modules]
        code = f"from tidegate_testing.fake_server import main; main({args!r})"
        return EngineCommand(argv=(sys.executable, "-c", code))

    return command


@dataclass
class Env:
    routing: RoutingTable
    supervisor: EngineSupervisor
    sync: AdapterSync
    service: AdapterService
    http: aiohttp.ClientSession


async def eventually(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    config = Config(
        home=tmp_path,
        engines={
            "served_model_name": SERVED,
            "health_interval_s": 0.2,
            "restart_backoff_s": 0.1,
            "stop_timeout_s": 5,
            "adapters": [
                {"name": "support-bot", "path": V1},
                {"name": "support-bot", "version": "v2", "path": "/adapters/support-bot-v2"},
            ],
        },
    )
    async with AsyncExitStack() as stack:
        store = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
        stack.push_async_callback(store.dispose)
        await migrate(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
        sessions = create_sessionmaker(store)
        routing = build_routing(config)
        http = await stack.enter_async_context(aiohttp.ClientSession())
        supervisor = EngineSupervisor(
            config=config, routing=routing, metrics=GatewayMetrics(), command=lora_command(config)
        )
        await supervisor.start()
        stack.push_async_callback(supervisor.stop)
        sync = AdapterSync(
            config=config, sessions=sessions, routing=routing, http=http, interval_s=0.1
        )
        await sync.start()
        stack.push_async_callback(sync.stop)
        service = AdapterService(config=config, sessions=sessions, routing=routing, sync=sync)
        yield Env(routing, supervisor, sync, service, http)


async def _answer(env: Env, model: str) -> str:
    pool = env.routing.pool(env.routing.route(model).pools[0])
    replica = pool.pick()
    body = {
        "model": pool.upstream_model or replica.upstream_model,
        "messages": [{"role": "user", "content": "hi"}],
    }
    async with env.http.post(f"{replica.base_url}/chat/completions", json=body) as response:
        assert response.status == 200, await response.text()
        return str((await response.json())["choices"][0]["message"]["content"])


async def test_configured_adapters_are_served_by_the_local_replica(env: Env) -> None:
    (replica,) = env.supervisor.replicas
    await eventually(lambda: replica.adapters == {"support-bot", "support-bot@v2"})
    assert env.routing.route("support-bot").pools == ("support-bot", "support-bot@v2")
    assert (await _answer(env, "support-bot")).startswith("[support-bot] ")
    assert not (await _answer(env, SERVED)).startswith("[")


async def test_a_runtime_adapter_comes_back_after_a_replica_restart(env: Env) -> None:
    (replica,) = env.supervisor.replicas
    await eventually(lambda: replica.ready)
    change = AdapterCreate(name="sql-helper", version="", pool=None, source="/adapters/sql")
    info = await env.service.add(change, actor=Actor.internal("test"))
    assert info.spec.pool == SERVED and [load.loaded for load in info.replicas] == [True]
    assert (await _answer(env, "sql-helper")).startswith("[sql-helper] ")

    (runner,) = env.supervisor.runners
    first = runner.process.pid
    os.killpg(first, signal.SIGKILL)  # the engine crashes; the supervisor starts it again
    await eventually(lambda: runner.process.pid != first and replica.ready)
    # The new engine has only its --lora-modules; the sync loads the runtime one again.
    deadline = time.monotonic() + 30
    while "sql-helper" not in (await loaded_adapters(env.http, replica.base_url) or ()):
        assert time.monotonic() < deadline, "the restarted engine never got the adapter back"
        await asyncio.sleep(0.05)
    assert (await _answer(env, "sql-helper")).startswith("[sql-helper] ")
