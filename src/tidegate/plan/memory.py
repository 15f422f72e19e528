"""Bytes: weights by precision, KV cache per token and per sequence, and the KV budget.

KV budget on a GPU follows vLLM's startup profiling (``Worker.determine_available_memory``):
it runs a forward pass of ``max_num_batched_tokens`` dummy tokens plus a sampler pass over
``max_num_seqs`` rows of logits, measures the peak, measures CUDA-graph memory, and gives the
KV cache ``total × gpu_memory_utilization − weights − peak activations − non-torch memory −
CUDA graphs``. vLLM measures; the planner estimates, per GPU:

* activations: ``max_num_batched_tokens × (4 × hidden + 2 × MLP width / TP) × 2 B`` (residual,
  attention and gated-MLP intermediates in 16 bits; MLP width is top-k experts for MoE), plus
  ``max_num_seqs × vocab × 4 B`` (float32 logits of the sampler pass);
* non-torch memory (CUDA context, cuBLAS workspaces, allocator slack): 1 GiB, plus 0.5 GiB of
  NCCL and custom all-reduce buffers when TP > 1;
* CUDA graphs: 1 GiB (0 with enforce_eager); vLLM's measured figure is usually 0.2-1 GiB.

That lands a few percent under what vLLM reports on large GPUs, the safe side; the headroom in
``recommend`` covers the rest. On CPU there is no profiling: vLLM gives the KV cache exactly
``VLLM_CPU_KVCACHE_SPACE`` GiB.

vLLM then cuts the budget into whole blocks of ``block_size`` tokens across all layers (16 on
GPU; 128 on CPU, 16 for MLA on CPU) and logs ``KV cache size: N tokens`` with
``N = int(num_blocks / blocks_per_request × max_model_len)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tidegate.plan.errors import PlanInputError
from tidegate.plan.model_spec import ModelSpec
from tidegate.plan.params import ParamCounts

GIB = 1 << 30
GPU_BLOCK_SIZE = 16
CPU_BLOCK_SIZE = 128
CPU_MLA_BLOCK_SIZE = 16
RUNTIME_OVERHEAD_BYTES = 1 * GIB
TP_COMM_OVERHEAD_BYTES = GIB // 2
CUDA_GRAPH_BYTES = 1 * GIB
ACTIVATION_BYTES = 2
LOGITS_BYTES = 4
# AWQ/GPTQ keep a 16-bit scale and a packed zero point per group of weights.
GROUP_SCALE_BYTES = 2
FP8_BLOCK_SCALE_BYTES = 4
WEIGHT_DTYPES = ("auto", "bf16", "fp8")
KV_DTYPES = ("auto", "fp8")


def weight_bytes(spec: ModelSpec, counts: ParamCounts, *, dtype: str = "auto") -> int:
    """Bytes of all weights. `dtype` fp8 means vLLM's online fp8 quantization of the linears."""
    if dtype not in WEIGHT_DTYPES:
        raise PlanInputError(f"weights dtype must be one of {', '.join(WEIGHT_DTYPES)}")
    # float32 checkpoints are served in 16 bits: vLLM downcasts them under dtype auto.
    sixteen_bit = 2 * (counts.embedding + counts.other)
    quant = spec.quantization
    if quant is not None:
        if dtype == "fp8":
            raise PlanInputError(f"{spec.name} is already quantized ({quant.method})")
        if quant.method == "fp8":
            scales = counts.linear // quant.group_size * FP8_BLOCK_SCALE_BYTES
            return sixteen_bit + counts.linear + (scales if quant.group_size else 0)
        packed = math.ceil(counts.linear * quant.bits / 8)
        groups = math.ceil(counts.linear / quant.group_size)
        return (
            sixteen_bit + packed + groups * GROUP_SCALE_BYTES + math.ceil(groups * quant.bits / 8)
        )
    linear_bytes = 1 if dtype == "fp8" else 2
    return sixteen_bit + counts.linear * linear_bytes


def kv_dtype_bytes(kv_dtype: str, *, auto_bytes: int = 2) -> int:
    """``auto_bytes``: what ``auto`` takes, 2 (16-bit) except on a CPU engine that runs
    float32 (see ``engines.dtype``)."""
    if kv_dtype not in KV_DTYPES:
        raise PlanInputError(f"KV cache dtype must be one of {', '.join(KV_DTYPES)}")
    return 1 if kv_dtype == "fp8" else auto_bytes


def kv_bytes_per_token(
    spec: ModelSpec, *, kv_dtype: str = "auto", tp: int = 1, auto_bytes: int = 2
) -> int:
    """KV cache bytes one token takes on one GPU, all layers together.

    Standard attention: K and V for each KV head, the heads split over TP ranks (replicated
    when TP exceeds them). MLA: the compressed latent plus the RoPE key, the same on every rank.
    """
    size = kv_dtype_bytes(kv_dtype, auto_bytes=auto_bytes)
    if spec.mla is not None:
        return spec.num_layers * (spec.mla.kv_lora_rank + spec.mla.qk_rope_head_dim) * size
    heads_per_rank = max(1, spec.num_kv_heads // tp)
    return 2 * spec.num_layers * heads_per_rank * spec.head_dim * size


def blocks_per_sequence(
    spec: ModelSpec, *, context: int, block_size: int, max_batched_tokens: int
) -> float:
    """Blocks (each spanning every layer) one sequence of `context` tokens holds at most.

    Sliding-window layers hold only the window plus one scheduling step (vLLM's
    ``SlidingWindowSpec.max_admission_blocks_per_request``); the result is the layer-weighted
    mean, which is how vLLM's hybrid allocator shares one pool between layer groups.
    """
    full_blocks = math.ceil(context / block_size)
    window = spec.sliding_window
    if window is None:
        return float(full_blocks)
    held = min(window.window - 1 + max_batched_tokens, context)
    window_blocks = math.ceil(held / block_size) + 1
    full_layers = spec.num_layers - window.num_layers
    return (full_layers * full_blocks + window.num_layers * window_blocks) / spec.num_layers


def activation_bytes(
    spec: ModelSpec, *, tp: int, max_batched_tokens: int, max_num_seqs: int
) -> int:
    """Peak of vLLM's profiling forward and sampler passes on one GPU (see module docstring)."""
    if spec.moe is not None:
        mlp_width = spec.moe.experts_per_token * spec.moe.expert_intermediate_size
        mlp_width += spec.moe.shared_intermediate_size
    else:
        mlp_width = spec.intermediate_size
    per_token = (4 * spec.hidden_size + 2 * mlp_width // tp) * ACTIVATION_BYTES
    return max_batched_tokens * per_token + max_num_seqs * spec.vocab_size * LOGITS_BYTES


def gpu_overhead_bytes(
    spec: ModelSpec, *, tp: int, max_batched_tokens: int, max_num_seqs: int, enforce_eager: bool
) -> int:
    """Memory on one GPU that is neither weights nor KV cache."""
    overhead = RUNTIME_OVERHEAD_BYTES + (TP_COMM_OVERHEAD_BYTES if tp > 1 else 0)
    overhead += 0 if enforce_eager else CUDA_GRAPH_BYTES
    return overhead + activation_bytes(
        spec, tp=tp, max_batched_tokens=max_batched_tokens, max_num_seqs=max_num_seqs
    )


@dataclass(frozen=True, kw_only=True)
class KVCapacity:
    blocks: int
    block_size: int
    tokens: int
    """What vLLM logs as "KV cache size: N tokens" for this context length."""
    max_sequences: int
    """Sequences of the full context that fit at once."""


def kv_capacity(
    spec: ModelSpec,
    *,
    kv_budget_bytes: int,
    bytes_per_token: int,
    context: int,
    block_size: int,
    max_batched_tokens: int,
) -> KVCapacity:
    """Cut a per-GPU KV budget into whole blocks, as vLLM does, and count sequences."""
    blocks = max(0, kv_budget_bytes) // (bytes_per_token * block_size)
    per_sequence = blocks_per_sequence(
        spec, context=context, block_size=block_size, max_batched_tokens=max_batched_tokens
    )
    return KVCapacity(
        blocks=blocks,
        block_size=block_size,
        tokens=int(blocks / per_sequence * context),
        max_sequences=math.floor(blocks / per_sequence),
    )
