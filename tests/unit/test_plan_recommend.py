"""GPU and TP choices, refusals and the CPU option."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidegate.plan import memory
from tidegate.plan.errors import PlanInputError
from tidegate.plan.gpus import GPUS, find_gpu
from tidegate.plan.model_source import load_model_spec
from tidegate.plan.model_spec import ModelSpec
from tidegate.plan.recommend import PlanRequest, recommend, recommend_cpu, tp_sizes

CONFIGS = Path(__file__).parent.parent / "data" / "model_configs"


def spec(name: str) -> ModelSpec:
    return load_model_spec(str(CONFIGS / f"{name}.json"))


def test_tp_sizes_respect_heads() -> None:
    assert tp_sizes(spec("llama-3.1-8b")) == (1, 2, 4, 8)  # 32 heads, 8 KV heads
    assert tp_sizes(spec("qwen2.5-7b")) == (1, 2, 4)  # 28 heads: 8 does not divide them
    assert tp_sizes(spec("smollm2-135m")) == (1,)  # 9 heads
    assert tp_sizes(spec("deepseek-v2-lite")) == (1, 2, 4, 8)  # MLA: only attention heads count


def test_find_gpu_accepts_loose_names() -> None:
    assert find_gpu("h100").name == "H100-80GB"
    assert find_gpu("A100-40GB").name == "A100-40GB"
    assert find_gpu("a100").name == "A100-80GB"
    with pytest.raises(ValueError, match="unknown GPU"):
        find_gpu("TPUv5")


def test_llama_8b_fits_one_80gb_gpu() -> None:
    plan = recommend(spec("llama-3.1-8b"), PlanRequest(context=8192, concurrency=32))
    assert plan.chosen is not None
    assert (plan.chosen.device, plan.chosen.tp) == ("A100-80GB", 1)
    assert plan.chosen.capacity.max_sequences >= 39  # 32 + 20% headroom


def test_chosen_option_by_hand() -> None:
    """1×H100 for Llama-3.1-8B, every step of the budget worked out."""
    llama = spec("llama-3.1-8b")
    plan = recommend(llama, PlanRequest(context=8192, concurrency=32), gpu=find_gpu("H100"), tp=1)
    (option,) = plan.options
    weights = 2 * 8_030_261_248
    overhead = 2 * memory.GIB + 8192 * (4 * 4096 + 2 * 14336) * 2 + 32 * 128256 * 4
    budget = int(81559 * (1 << 20) * 0.9) - weights - overhead
    blocks = budget // (131072 * 16)
    assert (option.weights_per_device, option.overhead_per_device) == (weights, overhead)
    assert option.capacity.blocks == blocks
    assert option.capacity.max_sequences == blocks // (8192 // 16)


def test_70b_needs_tensor_parallel() -> None:
    plan = recommend(spec("llama-3.1-70b"), PlanRequest(context=8192, concurrency=32))
    assert plan.chosen is not None and plan.chosen.tp >= 2
    one_gpu = [o for o in plan.options if o.tp == 1]
    assert all("weights" in o.reason for o in one_gpu if o.device != "B200")


def test_refusal_names_the_best_option_and_remedies() -> None:
    plan = recommend(spec("llama-3.1-70b"), PlanRequest(context=131072, concurrency=64))
    assert plan.chosen is None
    assert plan.refusal.startswith("nothing fits: even 8×B200 gives")
    assert "sequences of 131,072 tokens" in plan.refusal and "--kv-dtype fp8" in plan.refusal


def test_fp8_kv_doubles_capacity_roughly() -> None:
    llama = spec("llama-3.1-8b")
    h100 = find_gpu("H100-80GB")
    base = recommend(llama, PlanRequest(context=8192, concurrency=8), gpu=h100, tp=1)
    fp8 = recommend(llama, PlanRequest(context=8192, concurrency=8, kv_dtype="fp8"), gpu=h100, tp=1)
    ratio = fp8.options[0].capacity.blocks / base.options[0].capacity.blocks
    assert ratio == pytest.approx(2, rel=0.01)


def test_sliding_window_model_fits_more_long_sequences() -> None:
    request = PlanRequest(context=32768, concurrency=16)
    h100 = find_gpu("H100-80GB")
    mistral = recommend(spec("mistral-7b-v0.1"), request, gpu=h100, tp=1).options[0]
    per_seq = -(-(4095 + 8192) // 16) + 1  # H100's default step is 8,192 tokens
    assert mistral.capacity.max_sequences == mistral.capacity.blocks // per_seq
    assert mistral.capacity.max_sequences > mistral.capacity.blocks // (32768 // 16)


def test_mla_model_plans_with_latent_cache() -> None:
    plan = recommend(spec("deepseek-v3"), PlanRequest(context=8192, concurrency=32))
    assert plan.chosen is not None and plan.chosen.tp == 8
    assert plan.chosen.device in ("H200", "B200")
    assert plan.chosen.kv_bytes_per_token == 61 * 576 * 2


def test_invalid_requests_are_refused() -> None:
    with pytest.raises(PlanInputError, match="exceeds gemma-2-9b's maximum of 8,192"):
        recommend(spec("gemma-2-9b"), PlanRequest(context=16384, concurrency=1))
    with pytest.raises(PlanInputError, match="TP 8 is not possible"):
        recommend(spec("qwen2.5-7b"), PlanRequest(context=4096, concurrency=1), tp=8)
    with pytest.raises(PlanInputError, match="already quantized"):
        recommend(
            spec("llama-3.1-8b-awq"), PlanRequest(context=4096, concurrency=1, weights_dtype="fp8")
        )


def test_options_cover_every_gpu_and_valid_tp() -> None:
    plan = recommend(spec("qwen2.5-7b"), PlanRequest(context=4096, concurrency=4))
    assert len(plan.options) == len(GPUS) * 3
    assert plan.chosen is not None and plan.chosen.device in ("L4", "A10G")


def test_cpu_with_given_and_derived_kv_space() -> None:
    smol = spec("smollm2-135m")
    given = recommend_cpu(smol, PlanRequest(context=2048, concurrency=16), kv_space_gib=2)
    assert given.chosen is not None and given.chosen.capacity.tokens == 93184
    # 80 sequences + 20% = 96 × 16 blocks × 128 tokens × 23,040 B = 4.2 GiB → 5 GiB.
    derived = recommend_cpu(smol, PlanRequest(context=2048, concurrency=80))
    assert derived.chosen is not None and derived.chosen.cpu_kv_space_gib == 5
    short = recommend_cpu(smol, PlanRequest(context=2048, concurrency=80), kv_space_gib=1)
    assert short.chosen is None and "holds 22 sequences" in short.refusal
