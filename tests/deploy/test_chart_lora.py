"""LoRA adapters in the Helm chart: a pool's `adapters` block (tidegate's own) starts its engines
with the same vLLM flags tidegate's supervisor passes, declares each adapter version to the
gateway as a model on that pool's engines, and is refused at render time where tidegate's
config would refuse it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import pytest

from tests.deploy.chart import Manifest, by_kind, named, render, validate
from tidegate.config import Config, load_config
from tidegate.engines.profile import build_engine_command
from tidegate.routing.build import build_routing

MODEL = "Qwen/Qwen2.5-7B-Instruct"
ADAPTERS: list[dict[str, Any]] = [
    {"name": "support-bot", "path": "/models/adapters/support-bot", "base_model": MODEL},
    {"name": "support-bot", "version": "v2", "path": "/models/adapters/support-bot-v2"},
    {"name": "sql-writer", "hub_id": "acme/sql-lora", "max_lora_rank": 20},
]


def _values(pool: dict[str, Any], *, multi_node: bool = False) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "chat", "model": MODEL, "servedModelName": "chat"}
    if multi_node:
        base["multiNode"] = {"enabled": True, "size": 2}
    return {"engines": {"pools": [{**base, **pool}]}}


def _vllm(manifests: list[Manifest], pool: str = "chat") -> dict[str, Any]:
    deployments = [
        m for m in by_kind(manifests, "Deployment") if m["metadata"]["name"].endswith(pool)
    ]
    if deployments:
        spec = deployments[0]["spec"]["template"]["spec"]
    else:
        lws = named(manifests, "LeaderWorkerSet", f"tg-tidegate-engine-{pool}")
        spec = lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]
    container: dict[str, Any] = spec["containers"][0]
    return container


def _lora_args(args: list[str] | tuple[str, ...]) -> list[str]:
    """From --enable-lora on (both the chart and tidegate put the LoRA flags last, before the
    profile's extra_args, which these pools have none of)."""
    return list(args[args.index("--enable-lora") :]) if "--enable-lora" in args else []


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


@pytest.mark.parametrize("multi_node", [False, True])
def test_engines_start_with_the_adapters(multi_node: bool) -> None:
    manifests = render(_values({"adapters": ADAPTERS, "max_loras": 2}, multi_node=multi_node))
    for manifest in manifests:
        validate(manifest)
    container = _vllm(manifests)
    assert _lora_args(container["args"]) == [
        "--enable-lora",
        "--max-loras",
        "2",
        "--max-lora-rank",
        "32",  # sql-writer's 20, rounded up to a rank vLLM accepts
        "--lora-modules",
        "support-bot=/models/adapters/support-bot",
        "support-bot@v2=/models/adapters/support-bot-v2",
        "sql-writer=acme/sql-lora",
    ]
    assert _env(container)["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    # The paths are read from the model cache volume, mounted where they point.
    assert {"name": "model-cache", "mountPath": "/models"} in container["volumeMounts"]


def test_pools_without_adapters_have_no_lora_and_lora_true_turns_it_on() -> None:
    container = _vllm(render(_values({})))
    assert _lora_args(container["args"]) == []
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" not in _env(container)
    container = _vllm(render(_values({"lora": True, "max_lora_rank": 64})))
    assert _lora_args(container["args"]) == [
        "--enable-lora",
        "--max-loras",
        "4",
        "--max-lora-rank",
        "64",
    ]
    assert _env(container)["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"


def _gateway_config(manifests: list[Manifest], tmp_path: Path) -> Config:
    text = named(manifests, "ConfigMap", "tg-tidegate-gateway")["data"]["config.yaml"]
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_config(path)


def test_gateway_serves_each_adapter_as_a_model_on_the_pool_s_engines(tmp_path: Path) -> None:
    config = _gateway_config(render(_values({"adapters": ADAPTERS})), tmp_path)
    url = "http://tg-tidegate-engine-chat.llm.svc.cluster.local:8000/v1"
    assert [(u.model, u.pool, u.upstream_model, u.url, u.discovery) for u in config.upstreams] == [
        ("chat", "", "", url, "dns"),
        ("support-bot", "support-bot", "support-bot", url, "dns"),
        ("support-bot", "support-bot@v2", "support-bot@v2", url, "dns"),
        ("sql-writer", "sql-writer", "sql-writer", url, "dns"),
    ]
    # The gateway builds its routing table from it: one public model per adapter name, each
    # version a pool that splits and rollouts can name.
    routing = build_routing(config)
    assert routing.models() == ["chat", "sql-writer", "support-bot"]
    assert routing.route("support-bot").pools == ("support-bot", "support-bot@v2")
    assert {pool.name for pool in routing.pools()} >= {"support-bot@v2", "sql-writer"}


@pytest.mark.parametrize(
    ("pool", "message"),
    [
        ({"adapters": [{"name": "-bad", "path": "/m/a"}]}, r"adapters\[0\]: name \"-bad\" must"),
        ({"adapters": [{"name": "a b", "path": "/m/a"}]}, r"name \"a b\" must be 1-63 letters"),
        ({"adapters": [{"name": "a", "version": "v/1", "path": "/m/a"}]}, r"version \"v/1\""),
        ({"adapters": [{"name": "a"}]}, r"\(a\): set exactly one of path and hub_id"),
        (
            {"adapters": [{"name": "a", "path": "/m/a", "hub_id": "o/n"}]},
            "set exactly one of path and hub_id",
        ),
        (
            {"adapters": [{"name": "a", "path": "/models/../etc/secrets"}]},
            r"path \"/models/../etc/secrets\" may not contain '..' parts",
        ),
        ({"adapters": [{"name": "a", "path": "../a"}]}, r"may not contain '..' parts"),
        ({"adapters": [{"name": "a", "hub_id": "no-owner"}]}, r"hub_id \"no-owner\" must be"),
        (
            {"adapters": [{"name": "a", "path": "/m/a", "base_model": "meta-llama/Llama-3-8B"}]},
            r"trained on meta-llama/Llama-3-8B, but the pool serves Qwen/Qwen2.5-7B-Instruct",
        ),
        (
            {"adapters": [{"name": "a", "path": "/m/a", "max_lora_rank": 1024}]},
            r"max_lora_rank 1024 must be an integer from 1 to 512 \(vLLM takes 1, 8, 16, 32",
        ),
        ({"adapters": [{"name": "a", "path": "/m/a", "max_lora_rank": 0}]}, "max_lora_rank 0"),
        ({"adapters": [{"name": "a", "path": "/m/a", "max_lora_rank": 8.5}]}, "max_lora_rank 8.5"),
        ({"lora": True, "max_lora_rank": 513}, r"engines.pools chat: max_lora_rank 513 must be"),
        ({"lora": True, "max_loras": 0}, r"max_loras 0 must be an integer from 1 to 256"),
        (
            {"adapters": [{"name": "chat", "path": "/m/a"}]},
            r"adapter chat clashes with the model \(pool\) of that name",
        ),
        (
            {"adapters": [{"name": "a", "path": "/m/a"}, {"name": "a", "hub_id": "o/n"}]},
            r"adapters\[1\]: adapter a is listed twice",
        ),
        ({"adapters": ["just-a-name"]}, r"adapters\[0\] must be a map"),
    ],
)
def test_bad_adapters_are_refused(pool: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=message):
        render(_values(pool))


def test_an_adapter_listed_on_two_pools_is_refused() -> None:
    adapter = {"name": "a", "path": "/m/a"}
    pools = [
        {"name": "one", "model": MODEL, "adapters": [adapter]},
        {"name": "two", "model": MODEL, "adapters": [adapter]},
    ]
    with pytest.raises(helm.HelmError, match="adapter a is listed twice"):
        render({"engines": {"pools": pools}})


@pytest.mark.parametrize(
    "block",
    [
        {"adapters": ADAPTERS, "max_loras": 2},
        {"adapters": ADAPTERS[:1], "max_lora_rank": 100},
        {"adapters": [{"name": "tiny", "path": "/models/a", "max_lora_rank": 1}]},
        {"adapters": [{"name": "big", "hub_id": "o/big", "max_lora_rank": 300}]},
        {"lora": True},
        {"lora": True, "max_lora_rank": 9, "max_loras": 16},
    ],
)
def test_chart_passes_the_flags_tidegate_s_supervisor_passes(block: dict[str, Any]) -> None:
    """The same block, loaded by tidegate's config model and given to its own vLLM command
    builder, and rendered by the chart: the same LoRA flags and environment."""
    pool = Config.model_validate(
        {"engines": {"model": MODEL, "pools": [{"name": "chat", "model": MODEL, **block}]}}
    ).engines.local_pools()[1]
    command = build_engine_command(
        config=Config(),
        model=MODEL,
        port=8000,
        device="cuda",
        adapters=pool.adapters,
        max_loras=pool.max_loras,
        lora=pool.lora,
        max_lora_rank=pool.max_lora_rank,
    )
    container = _vllm(render(_values(block)))
    assert _lora_args(container["args"]) == _lora_args(command.argv) != []
    tidegate_env = {k: v for k, v in command.env.items() if "LORA" in k}
    assert {k: v for k, v in _env(container).items() if "LORA" in k} == tidegate_env != {}
