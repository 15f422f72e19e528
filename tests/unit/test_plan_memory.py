"""Weight and KV cache bytes against hand computations, and vLLM's block rounding."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidegate.plan import memory
from tidegate.plan.memory import GIB
from tidegate.plan.model_source import load_model_spec
from tidegate.plan.model_spec import ModelSpec
from tidegate.plan.params import count_params

CONFIGS = Path(__file__).parent.parent / "data" / "model_configs"


def spec(name: str) -> ModelSpec:
    return load_model_spec(str(CONFIGS / f"{name}.json"))


@pytest.mark.parametrize(
    ("name", "per_token"),
    [
        ("smollm2-135m", 2 * 30 * 3 * 64 * 2),  # 23,040 as the issue works it out
        ("llama-3.1-8b", 2 * 32 * 8 * 128 * 2),
        ("llama-3.1-70b", 2 * 80 * 8 * 128 * 2),
        ("mistral-7b-v0.1", 2 * 32 * 8 * 128 * 2),
        ("qwen2.5-7b", 2 * 28 * 4 * 128 * 2),
        ("mixtral-8x7b", 2 * 32 * 8 * 128 * 2),
        ("gemma-2-9b", 2 * 42 * 8 * 256 * 2),
        ("deepseek-v2-lite", 27 * (512 + 64) * 2),  # MLA: the latent, not per-head K and V
        ("deepseek-v3", 61 * (512 + 64) * 2),
    ],
)
def test_kv_bytes_per_token(name: str, per_token: int) -> None:
    assert memory.kv_bytes_per_token(spec(name)) == per_token
    assert memory.kv_bytes_per_token(spec(name), kv_dtype="fp8") == per_token // 2


def test_kv_heads_split_over_tp_and_replicated_beyond() -> None:
    llama = spec("llama-3.1-70b")  # 8 KV heads
    assert memory.kv_bytes_per_token(llama, tp=2) == 2 * 80 * 4 * 128 * 2
    assert memory.kv_bytes_per_token(llama, tp=8) == 2 * 80 * 1 * 128 * 2
    smol = spec("smollm2-135m")  # 3 KV heads: TP 3 would split, TP above replicates one each
    assert memory.kv_bytes_per_token(smol, tp=6) == 2 * 30 * 1 * 64 * 2
    lite = spec("deepseek-v2-lite")  # MLA latent is whole on every rank
    assert memory.kv_bytes_per_token(lite, tp=4) == memory.kv_bytes_per_token(lite)


def test_weight_bytes_by_precision() -> None:
    llama = spec("llama-3.1-8b")
    counts = count_params(llama)
    assert memory.weight_bytes(llama, counts) == 2 * counts.total
    assert memory.weight_bytes(llama, counts, dtype="bf16") == 2 * counts.total
    fp8 = memory.weight_bytes(llama, counts, dtype="fp8")
    assert fp8 == counts.linear + 2 * (counts.embedding + counts.other)  # embeddings stay 16-bit
    # float32 checkpoints are served in 16 bits (vLLM downcasts under dtype auto).
    gemma = spec("gemma-2-9b")
    assert memory.weight_bytes(gemma, count_params(gemma)) == 2 * count_params(gemma).total


def test_awq_4bit_weights_with_group_scales() -> None:
    awq = spec("llama-3.1-8b-awq")
    counts = count_params(awq)
    groups = counts.linear // 128
    expected = counts.linear // 2 + groups * 2 + groups // 2 + 2 * (counts.embedding + counts.other)
    assert memory.weight_bytes(awq, counts) == expected
    # The published AWQ checkpoint of Llama-3.1-8B-Instruct is 5.73 GB on disk.
    assert expected == pytest.approx(5.73e9, rel=0.03)


def test_fp8_checkpoint_with_block_scales() -> None:
    v3 = spec("deepseek-v3")
    counts = count_params(v3)
    scales = counts.linear // (128 * 128) * 4
    assert memory.weight_bytes(v3, counts) == counts.linear + scales + 2 * (
        counts.embedding + counts.other
    )


def test_cpu_two_gib_matches_vllm_93184_tokens() -> None:
    """vLLM CPU: 2 GiB / (23,040 B × 128-token blocks) = 728 whole blocks = 93,184 tokens."""
    smol = spec("smollm2-135m")
    capacity = memory.kv_capacity(
        smol,
        kv_budget_bytes=2 * GIB,
        bytes_per_token=23040,
        context=2048,
        block_size=memory.CPU_BLOCK_SIZE,
        max_batched_tokens=2048,
    )
    assert (capacity.blocks, capacity.tokens, capacity.max_sequences) == (728, 93184, 45)


def test_reported_tokens_follow_vllm_for_context_not_a_block_multiple() -> None:
    # vLLM logs int(num_blocks / cdiv(context, block) × context): 728 / 8 × 1000.
    capacity = memory.kv_capacity(
        spec("smollm2-135m"),
        kv_budget_bytes=2 * GIB,
        bytes_per_token=23040,
        context=1000,
        block_size=128,
        max_batched_tokens=2048,
    )
    assert (capacity.tokens, capacity.max_sequences) == (91000, 91)


def test_sliding_window_sequences_hold_only_the_window() -> None:
    mistral = spec("mistral-7b-v0.1")
    blocks = memory.blocks_per_sequence(
        mistral, context=32768, block_size=16, max_batched_tokens=2048
    )
    assert blocks == -(-(4095 + 2048) // 16) + 1  # window - 1 + one step, plus a partial block
    short = memory.blocks_per_sequence(
        mistral, context=1024, block_size=16, max_batched_tokens=2048
    )
    assert short == 1024 / 16 + 1
    gemma = spec("gemma-2-9b")  # half the layers slide: the mean of full and window blocks
    mixed = memory.blocks_per_sequence(gemma, context=8192, block_size=16, max_batched_tokens=2048)
    assert mixed == (21 * 512 + 21 * (-(-(4095 + 2048) // 16) + 1)) / 42


def test_gpu_overhead_model() -> None:
    llama = spec("llama-3.1-8b")
    activations = 8192 * (4 * 4096 + 2 * 14336) * 2 + 256 * 128256 * 4
    assert (
        memory.activation_bytes(llama, tp=1, max_batched_tokens=8192, max_num_seqs=256)
        == activations
    )
    eager = memory.gpu_overhead_bytes(
        llama, tp=1, max_batched_tokens=8192, max_num_seqs=256, enforce_eager=True
    )
    graphs = memory.gpu_overhead_bytes(
        llama, tp=2, max_batched_tokens=8192, max_num_seqs=256, enforce_eager=False
    )
    assert eager == GIB + activations
    assert graphs == GIB + GIB // 2 + GIB + 8192 * (4 * 4096 + 14336) * 2 + 256 * 128256 * 4
