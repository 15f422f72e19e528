"""Adapter pools in the routing table, adapter-aware balancing, the vLLM LoRA flags and the
adapters' config checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tidegate.config import Config, PoolConfig, SchedulingConfig
from tidegate.engines.profile import build_engine_command
from tidegate.rollout.versions import configured_fingerprints
from tidegate.routing.adapter_pools import AdapterAffinity, adapter_pool
from tidegate.routing.build import build_routing
from tidegate.routing.replica import Replica, ReplicaState
from tidegate.routing.replicas import Pool, RoutingTable
from tidegate.scheduling.scheduler import Scheduler


def _replica(rid: str, adapters: frozenset[str] = frozenset()) -> Replica:
    return Replica(
        id=rid,
        model="base",
        base_url=f"http://{rid}/v1",
        upstream_model="base",
        state=ReplicaState.READY,
        adapters=adapters,
    )


def test_a_replica_with_the_adapter_is_preferred() -> None:
    balancer = AdapterAffinity("bot", settings=PoolConfig(name="base"))
    replicas = [_replica("a"), _replica("b", frozenset({"bot"})), _replica("c")]
    assert {balancer.pick(replicas, affinity=None).id for _ in range(50)} == {"b"}


def test_an_adapter_keeps_to_one_replica_until_its_load_is_bounded() -> None:
    balancer = AdapterAffinity("bot", settings=PoolConfig(name="base", affinity_load_factor=1.5))
    replicas = [_replica(f"r{i}", frozenset({"bot"})) for i in range(4)]
    first = balancer.pick(replicas, affinity=None)
    assert all(balancer.pick(replicas, affinity=None) is first for _ in range(20))
    # Loaded far above the mean, it overflows to another replica that has the adapter.
    first.outstanding = 10
    assert balancer.pick(replicas, affinity=None) is not first


def test_adapter_pools_share_replicas_and_the_base_queue() -> None:
    routing = RoutingTable()
    base = routing.ensure_pool("base")
    routing.add(_replica("u0"))
    routing.add_adapter(adapter_pool("bot", base), model="bot")
    routing.add_adapter(adapter_pool("bot@v2", base), model="bot")
    assert routing.route("bot").pools == ("bot", "bot@v2")
    assert routing.pool("bot").replicas is base.replicas
    assert routing.pool("bot@v2").upstream_model == "bot@v2"
    scheduler = Scheduler(config=SchedulingConfig(), default_concurrency=4)
    assert scheduler.queue(routing.pool("bot")) is scheduler.queue(base)
    routing.remove_adapter("bot@v2", model="bot")
    assert routing.route("bot").pools == ("bot",)
    routing.remove_adapter("bot", model="bot")
    assert "bot" not in routing.models()
    routing.remove_adapter("base", model="base")  # not an adapter pool: stays
    assert isinstance(routing.pool("base"), Pool)


def _config(tmp_path: Path, **engines: object) -> Config:
    return Config(home=tmp_path, engines={"venv": str(tmp_path / "venv"), **engines})


def test_configured_adapters_start_with_the_engine_and_route(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        max_loras=2,
        adapters=[
            {"name": "bot", "path": "/adapters/bot", "max_lora_rank": 12},
            {"name": "bot", "version": "v2", "hub_id": "org/bot-v2"},
        ],
    )
    local = config.engines.local_pools()[0]
    command = build_engine_command(
        config=config, model="/m", port=8000, device="cpu", adapters=local.adapters, max_loras=2
    )
    argv = list(command.argv)
    assert argv[argv.index("--max-loras") + 1] == "2"
    assert argv[argv.index("--max-lora-rank") + 1] == "16"
    modules = argv.index("--lora-modules")
    assert argv[modules + 1 : modules + 3] == ["bot=/adapters/bot", "bot@v2=org/bot-v2"]
    assert "--enable-lora" in argv
    assert command.env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    plain = build_engine_command(config=config, model="/m", port=8000, device="cpu")
    assert "--enable-lora" not in plain.argv

    routing = build_routing(config)
    assert routing.route("bot").pools == ("bot", "bot@v2")
    assert routing.pool("bot").base is routing.pool(config.engines.served_model_name)


@pytest.mark.parametrize(
    "adapters",
    [
        [{"name": "smollm2-135m-instruct", "path": "/a"}],
        [{"name": "bot", "path": "/a"}, {"name": "bot", "path": "/b"}],
        [{"name": "bot"}],
        [{"name": "bot", "path": "/a", "hub_id": "org/x"}],
        [{"name": "bot", "path": "/a/../etc"}],
        [{"name": "../bot", "path": "/a"}],
        [{"name": "bot", "path": "/a", "base_model": "another-model"}],
        [{"name": "bot", "path": "/a", "max_lora_rank": 0}],
    ],
)
def test_bad_adapter_configs_are_refused(tmp_path: Path, adapters: list[object]) -> None:
    with pytest.raises(ValidationError):
        _config(tmp_path, adapters=adapters)


def test_an_adapter_named_like_a_remote_model_is_refused(tmp_path: Path) -> None:
    config = Config(
        home=tmp_path,
        engines={"adapters": [{"name": "remote", "path": "/a"}]},
        upstreams=[{"url": "http://127.0.0.1:9/v1", "model": "remote"}],
    )
    with pytest.raises(ValueError, match="clashes"):
        build_routing(config)


def test_configured_adapters_are_versions_of_their_names(tmp_path: Path) -> None:
    adapter = tmp_path / "bot"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"x" * 10)
    config = _config(
        tmp_path,
        adapters=[
            {"name": "bot", "path": str(adapter)},
            {"name": "bot", "version": "v2", "hub_id": "org/bot-v2"},
        ],
    )
    found = {(f.model, f.pool): f for f in configured_fingerprints(config)}
    assert found[("bot", "bot")].source == str(adapter)
    assert found[("bot", "bot")].revision.startswith("files:")
    assert found[("bot", "bot@v2")].source == "org/bot-v2"


def test_lora_support_without_configured_adapters(tmp_path: Path) -> None:
    config = _config(tmp_path, lora=True, max_lora_rank=64, max_loras=8)
    local = config.engines.local_pools()[0]
    assert local.lora and not local.adapters
    command = build_engine_command(
        config=config,
        model="/m",
        port=8000,
        device="cpu",
        lora=local.lora,
        max_lora_rank=local.max_lora_rank,
        max_loras=local.max_loras,
    )
    argv = list(command.argv)
    assert "--enable-lora" in argv and "--lora-modules" not in argv
    assert argv[argv.index("--max-lora-rank") + 1] == "64"
    assert argv[argv.index("--max-loras") + 1] == "8"
    assert command.env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    # A configured adapter turns LoRA on by itself.
    with_adapter = _config(tmp_path, adapters=[{"name": "bot", "path": "/a"}])
    assert with_adapter.engines.local_pools()[0].lora
