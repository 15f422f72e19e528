"""Several local engine pools in one gateway: replica ids, vLLM commands, routing and a supervisor.

Commands are built without vLLM; the supervisor test puts a stand-in ``python`` in the engine
venv that runs the fake vLLM-shaped server, so every pool's replicas really start and get ready.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from tidegate.cli import app
from tidegate.config import (
    Config,
    EnginePoolConfig,
    EngineProfile,
    EnginesConfig,
    ModelRoute,
    PoolConfig,
    RoutingConfig,
    UpstreamServer,
    load_config,
)
from tidegate.engines import pools
from tidegate.engines.cpu_binding import split_cores
from tidegate.engines.pools import plan_replicas, replica_count
from tidegate.engines.state_file import STATE_FILE_NAME, read_state
from tidegate.engines.supervisor import EngineSupervisor
from tidegate.observability.metrics import GatewayMetrics
from tidegate.pipeline.model_limits import model_limits
from tidegate.routing.build import build_routing
from tidegate.routing.replicas import ReplicaState, RoutingTable

SERVED = "smol"
CANDIDATE = "smol-candidate"


def two_pools(tmp_path: Path, **engines: object) -> Config:
    return Config(
        home=tmp_path,
        scheduling={"engine_priority": True},
        engines=EnginesConfig(
            model="/models/stable",
            served_model_name=SERVED,
            replicas=2,
            profile=EngineProfile(device="cpu", max_num_seqs=16, cpu_kvcache_space_gib=3),
            pools=[
                EnginePoolConfig(
                    name=CANDIDATE,
                    model="/models/candidate",
                    profile=EngineProfile(max_num_seqs=8, dtype="bfloat16"),
                )
            ],
            **engines,
        ),
    )


def args(argv: tuple[str, ...]) -> dict[str, str]:
    flags = list(argv[3:])
    return {flag: value for flag, value in zip(flags, flags[1:], strict=False)}


def test_each_pool_gets_its_model_profile_and_unique_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pools, "available_cores", lambda: [0])  # too few to split: no binding
    resolved: list[str] = []

    def resolve(model: str) -> str:
        resolved.append(model)
        return model + "-prepared"

    specs = plan_replicas(two_pools(tmp_path), ports=[8001, 8002, 8003], resolve=resolve)
    assert [(s.id, s.pool, s.port) for s in specs] == [
        ("r0", SERVED, 8001),
        ("r1", SERVED, 8002),
        (f"{CANDIDATE}-r0", CANDIDATE, 8003),
    ]
    assert resolved == ["/models/stable", "/models/candidate"]  # once per distinct model
    stable, candidate = args(specs[0].command.argv), args(specs[2].command.argv)
    assert stable["--model"] == "/models/stable-prepared"
    assert candidate["--model"] == "/models/candidate-prepared"
    # One public name whichever pool answers.
    assert stable["--served-model-name"] == candidate["--served-model-name"] == SERVED
    assert (stable["--max-num-seqs"], stable["--dtype"]) == ("16", "float32")  # auto on a CPU
    assert (candidate["--max-num-seqs"], candidate["--dtype"]) == ("8", "bfloat16")
    assert candidate["--port"] == "8003"
    # Unset overrides keep the main profile's values (device, eager, KV cache space).
    assert "--enforce-eager" in specs[2].command.argv
    assert specs[2].command.env == {"VLLM_CPU_KVCACHE_SPACE": "3"}
    for spec in specs:
        assert spec.command.argv[-2:] == ("--scheduling-policy", "priority")
    assert [s.max_concurrency for s in specs] == [16, 16, 8]


def test_cpu_replicas_get_disjoint_cores_unless_a_profile_binds_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pools, "available_cores", lambda: [0, 1, 2, 3, 4])
    specs = plan_replicas(two_pools(tmp_path), ports=[1, 2, 3], resolve=lambda m: m)
    assert [s.command.env["VLLM_CPU_OMP_THREADS_BIND"] for s in specs] == ["0,1", "2,3", "4"]

    own = two_pools(tmp_path)
    own.engines.pools[0] = EnginePoolConfig(
        name=CANDIDATE, profile=EngineProfile(extra_env={"VLLM_CPU_OMP_THREADS_BIND": "7"})
    )
    specs = plan_replicas(own, ports=[1, 2, 3], resolve=lambda m: m)
    binds = [s.command.env["VLLM_CPU_OMP_THREADS_BIND"] for s in specs]
    assert binds == ["0,1,2", "3,4", "7"]  # the two unbound ones share the cores


@pytest.mark.parametrize(
    ("cores", "replicas", "binds"),
    [
        ([0, 1], 2, ["0", "1"]),
        ([4, 5, 6, 7], 2, ["4,5", "6,7"]),
        ([0, 1, 2], 2, ["0,1", "2"]),
        ([0], 2, []),  # fewer cores than replicas: they must share, vLLM binds as it likes
        ([0, 1, 2, 3], 1, []),  # one replica keeps vLLM's own binding
    ],
)
def test_split_cores(cores: list[int], replicas: int, binds: list[str]) -> None:
    assert split_cores(cores, replicas) == binds


def test_a_pool_without_a_model_serves_the_main_one(tmp_path: Path) -> None:
    config = Config(
        home=tmp_path,
        engines=EnginesConfig(
            model="/models/stable",
            served_model_name=SERVED,
            profile=EngineProfile(device="cpu"),
            pools=[EnginePoolConfig(name="eager-off", replicas=2)],
        ),
    )
    specs = plan_replicas(config, ports=[1, 2, 3], resolve=lambda m: m)
    assert [s.id for s in specs] == ["r0", "eager-off-r0", "eager-off-r1"]
    assert {args(s.command.argv)["--model"] for s in specs} == {"/models/stable"}
    assert replica_count(config) == 3


def test_no_main_replicas_means_no_local_pools(tmp_path: Path) -> None:
    base = two_pools(tmp_path)
    config = base.model_copy(update={"engines": base.engines.model_copy(update={"replicas": 0})})
    assert replica_count(config) == 0 and plan_replicas(config, ports=[]) == []


@pytest.mark.parametrize(
    "names",
    [[SERVED], ["a", "a"], ["bad/name"], [""]],
    ids=["main-name", "duplicate", "slash", "empty"],
)
def test_pool_names_must_be_distinct_and_plain(names: list[str]) -> None:
    with pytest.raises(ValidationError):
        EnginesConfig(served_model_name=SERVED, pools=[{"name": n} for n in names])


def test_extra_pools_follow_the_main_pool_in_the_route_without_a_breaker(tmp_path: Path) -> None:
    remote = UpstreamServer(url="http://remote:8000/v1", model=SERVED, pool="remote")
    config = two_pools(tmp_path).model_copy(update={"upstreams": [remote]})
    routing = build_routing(config)
    assert routing.route(SERVED).pools == (SERVED, CANDIDATE, "remote")
    assert routing.pool(SERVED).breaker is None
    assert routing.pool(CANDIDATE).breaker is None
    assert routing.pool("remote").breaker is not None


def test_routing_pools_settings_apply_to_an_extra_pool(tmp_path: Path) -> None:
    config = two_pools(tmp_path).model_copy(
        update={
            "routing": RoutingConfig(
                pools=[PoolConfig(name=CANDIDATE, circuit_breaker=True)],
                routes=[ModelRoute(model="canary-only", pools=[CANDIDATE])],
            )
        }
    )
    routing = build_routing(config)
    assert routing.pool(CANDIDATE).breaker is not None
    assert routing.route("canary-only").pools == (CANDIDATE,)


def test_each_local_pool_validates_with_its_own_context_length(tmp_path: Path) -> None:
    base = two_pools(tmp_path)
    candidate = base.engines.pools[0].model_copy(
        update={"profile": EngineProfile(max_model_len=1024)}
    )
    config = base.model_copy(
        update={
            "engines": base.engines.model_copy(update={"pools": [candidate]}),
            "routing": RoutingConfig(routes=[ModelRoute(model="canary-only", pools=[CANDIDATE])]),
        }
    )
    with ThreadPoolExecutor(1) as executor:
        limits = model_limits(config, local_model_dir=None, executor=executor)
    assert limits[SERVED].context_length == 4096
    assert limits["canary-only"].context_length == 1024


# -- a supervisor with two pools of stand-in engines ---------------------------------------------

_STAND_IN = """#!{python}
# Stands in for the engine venv's python: serves the fake vLLM-shaped server under the name
# vLLM would serve (--served-model-name).
import argparse
from tidegate_testing.fake_server import main
parser = argparse.ArgumentParser(allow_abbrev=False)
parser.add_argument("--port")
parser.add_argument("--served-model-name")
known, _ = parser.parse_known_args()
main(["--port", known.port, "--model", known.served_model_name])
"""


def stand_in_venv(tmp_path: Path) -> Path:
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(_STAND_IN.format(python=sys.executable))
    python.chmod(0o755)
    return tmp_path / "venv"


def model_dir(tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    path.mkdir()
    (path / "config.json").write_text("{}")
    return str(path)


async def test_supervisor_starts_every_pool_into_its_own_routing_pool(tmp_path: Path) -> None:
    config = Config(
        home=tmp_path / "home",
        engines=EnginesConfig(
            model=model_dir(tmp_path, "stable"),
            served_model_name=SERVED,
            replicas=1,
            venv=str(stand_in_venv(tmp_path)),
            health_interval_s=0.2,
            drain_grace_s=0.5,
            stop_timeout_s=5,
            profile=EngineProfile(device="cpu", max_num_seqs=16),
            pools=[
                EnginePoolConfig(
                    name=CANDIDATE,
                    model=model_dir(tmp_path, "candidate"),
                    profile=EngineProfile(max_num_seqs=8),
                )
            ],
        ),
    )
    routing = build_routing(config)
    supervisor = EngineSupervisor(config=config, routing=routing, metrics=GatewayMetrics())
    await supervisor.start()
    try:
        assert await supervisor.wait_ready(20)
        main, candidate = routing.pool(SERVED), routing.pool(CANDIDATE)
        assert [r.id for r in main.replicas] == ["r0"]
        assert [r.id for r in candidate.replicas] == [f"{CANDIDATE}-r0"]
        replica = candidate.replicas[0]
        assert (replica.model, replica.upstream_model, replica.max_concurrency) == (
            SERVED,
            SERVED,
            8,
        )
        assert replica.backend == f"{CANDIDATE}/{CANDIDATE}-r0".encode()
        assert routing.route(SERVED).pools == (SERVED, CANDIDATE)
        snapshot = read_state(config.state_dir / STATE_FILE_NAME)
        assert snapshot is not None
        assert [(r.id, r.pool, r.model, r.state) for r in snapshot.replicas] == [
            ("r0", SERVED, SERVED, "ready"),
            (f"{CANDIDATE}-r0", CANDIDATE, SERVED, "ready"),
        ]
        # The supervisor writes each command line at the top of the replica's log.
        log = (config.logs_dir / f"replica-{CANDIDATE}-r0.log").read_text()
        assert f"--model {tmp_path / 'candidate'} " in log and "--max-num-seqs 8 " in log
    finally:
        await supervisor.stop()
    assert all(r.state is ReplicaState.STOPPED for r in supervisor.replicas)


async def test_a_supervisor_without_replicas_starts_nothing(tmp_path: Path) -> None:
    config = Config(home=tmp_path, engines=EnginesConfig(replicas=0, pools=[{"name": "x"}]))
    supervisor = EngineSupervisor(config=config, routing=RoutingTable(), metrics=GatewayMetrics())
    await supervisor.start()
    assert supervisor.replicas == []


def test_config_show_prints_each_pool_as_it_runs(tmp_path: Path) -> None:
    path = tmp_path / "tidegate.yaml"
    path.write_text(
        "engines:\n"
        "  model: /models/stable\n"
        "  profile: {max_model_len: 2048}\n"
        f"  pools: [{{name: {CANDIDATE}, profile: {{max_num_seqs: 8}}}}]\n"
    )
    shown = CliRunner().invoke(app, ["config", "show", "--config", str(path)])
    assert shown.exit_code == 0, shown.output
    (pool,) = yaml.safe_load(shown.output)["engines"]["pools"]
    assert pool["model"] == "/models/stable"
    assert (pool["profile"]["max_model_len"], pool["profile"]["max_num_seqs"]) == (2048, 8)
    # Read back, the output configures the same pool.
    again = tmp_path / "again.yaml"
    again.write_text(shown.output)
    (reloaded,) = load_config(again).engines.local_pools()[1:]
    assert reloaded.profile == load_config(path).engines.local_pools()[1].profile
