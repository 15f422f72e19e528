"""config.json → ModelSpec and parameter counts, against published model sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tidegate.plan.errors import HubUnavailableError, ModelConfigError
from tidegate.plan.model_source import load_model_spec
from tidegate.plan.model_spec import ModelSpec, spec_from_config
from tidegate.plan.params import count_params

CONFIGS = Path(__file__).parent.parent / "data" / "model_configs"

# Published totals (model cards / safetensors index); DeepSeek-V3 without its MTP module.
KNOWN_PARAMS = {
    "llama-3.1-8b": 8.03e9,
    "llama-3.1-70b": 70.55e9,
    "mistral-7b-v0.1": 7.24e9,
    "qwen2.5-7b": 7.61e9,
    "mixtral-8x7b": 46.7e9,
    "deepseek-v2-lite": 15.7e9,
    "deepseek-v3": 671e9,
    "gemma-2-9b": 9.24e9,
    "smollm2-135m": 134.5e6,
}


def spec(name: str) -> ModelSpec:
    return load_model_spec(str(CONFIGS / f"{name}.json"))


@pytest.mark.parametrize("name", sorted(KNOWN_PARAMS))
def test_parameter_count_within_two_percent_of_published(name: str) -> None:
    total = count_params(spec(name)).total
    assert total == pytest.approx(KNOWN_PARAMS[name], rel=0.02)


def test_llama_8b_parameters_by_hand() -> None:
    counts = count_params(spec("llama-3.1-8b"))
    embed = 128256 * 4096
    attention = 2 * 4096 * 4096 + 2 * 4096 * 1024
    mlp = 3 * 4096 * 14336
    assert counts.embedding == 2 * embed  # untied LM head
    assert counts.linear == 32 * (attention + mlp)
    assert counts.other == (32 * 2 + 1) * 4096


def test_gqa_head_dim_and_tied_embeddings() -> None:
    smol = spec("smollm2-135m")
    assert (smol.num_layers, smol.num_kv_heads, smol.head_dim) == (30, 3, 64)
    assert smol.tie_word_embeddings and count_params(smol).embedding == 49152 * 576
    qwen = spec("qwen2.5-7b")
    assert qwen.head_dim == 3584 // 28 and qwen.qkv_bias


def test_sliding_window_layers() -> None:
    mistral = spec("mistral-7b-v0.1").sliding_window
    assert mistral is not None and (mistral.window, mistral.num_layers) == (4096, 32)
    gemma = spec("gemma-2-9b").sliding_window
    assert gemma is not None and (gemma.window, gemma.num_layers) == (4096, 21)
    assert spec("qwen2.5-7b").sliding_window is None  # use_sliding_window: false
    assert spec("mixtral-8x7b").sliding_window is None  # sliding_window: null


def test_layer_types_decide_sliding_layers() -> None:
    cfg = json.loads((CONFIGS / "llama-3.1-8b.json").read_text())
    cfg |= {"sliding_window": 1024, "layer_types": ["sliding_attention", "full_attention"] * 16}
    window = spec_from_config(cfg, name="x").sliding_window
    assert window is not None and window.num_layers == 16


def test_moe_and_mla() -> None:
    lite = spec("deepseek-v2-lite")
    assert lite.moe is not None and lite.mla is not None
    assert (lite.moe.num_experts, lite.moe.experts_per_token, lite.moe.num_moe_layers) == (
        64,
        6,
        26,
    )
    assert lite.moe.shared_intermediate_size == 2 * 1408
    assert (lite.mla.kv_lora_rank, lite.mla.qk_rope_head_dim, lite.mla.q_lora_rank) == (
        512,
        64,
        None,
    )
    mixtral = spec("mixtral-8x7b")
    assert mixtral.moe is not None and mixtral.moe.num_moe_layers == 32
    assert mixtral.moe.expert_intermediate_size == 14336


def test_quantization_configs() -> None:
    awq = spec("llama-3.1-8b-awq").quantization
    assert awq is not None and (awq.method, awq.bits, awq.group_size) == ("awq", 4, 128)
    fp8 = spec("deepseek-v3").quantization
    assert fp8 is not None and (fp8.method, fp8.bits, fp8.group_size) == ("fp8", 8, 128 * 128)


def test_unsupported_quantization_is_refused() -> None:
    cfg = {**json.loads((CONFIGS / "llama-3.1-8b.json").read_text())}
    cfg["quantization_config"] = {"quant_method": "bitsandbytes"}
    with pytest.raises(ModelConfigError, match="bitsandbytes"):
        spec_from_config(cfg, name="x")


def test_model_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text((CONFIGS / "qwen2.5-7b.json").read_text())
    loaded = load_model_spec(str(tmp_path))
    assert loaded.name == tmp_path.name and loaded.num_layers == 28


def test_missing_paths_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match="has no config.json"):
        load_model_spec(str(tmp_path))
    with pytest.raises(ModelConfigError, match="does not exist"):
        load_model_spec(str(tmp_path / "nope"))


def test_hub_id_without_hub_fails_clearly() -> None:
    # local_files_only answers from the (empty) cache at once instead of retrying the network.
    with pytest.raises(HubUnavailableError, match="Pass a local model directory"):
        load_model_spec("example-org/not-cached-model", local_files_only=True)
