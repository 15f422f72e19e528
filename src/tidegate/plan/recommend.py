"""Evaluate devices for a model and a target, and pick the smallest that meets it.

An option meets the target when the KV cache holds ``ceil(concurrency × (1 + headroom))``
sequences of the full context at once. Options are tried from the least GPU memory bought
upwards (``gpus.gpu_order``); a refusal names the best that was possible and what to change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tidegate.plan import memory
from tidegate.plan.errors import PlanInputError
from tidegate.plan.gpus import CPU_MAX_BATCHED_TOKENS, GPUS, TP_SIZES, Gpu, gpu_order
from tidegate.plan.lora import lora_bytes
from tidegate.plan.model_spec import ModelSpec
from tidegate.plan.params import ParamCounts, count_params


@dataclass(frozen=True, kw_only=True)
class PlanRequest:
    context: int
    concurrency: int
    weights_dtype: str = "auto"
    kv_dtype: str = "auto"
    gpu_memory_utilization: float = 0.9
    headroom: float = 0.2
    enforce_eager: bool = False
    block_size: int | None = None
    """None: vLLM's default for the device."""
    adapters: int = 0
    """LoRA slots per replica (vLLM --max-loras, engines.max_loras); 0: no LoRA."""
    lora_rank: int = 16
    """The largest adapter rank (vLLM --max-lora-rank)."""

    @property
    def required_sequences(self) -> int:
        return math.ceil(self.concurrency * (1 + self.headroom) - 1e-9)

    def lora_bytes(self, spec: ModelSpec) -> int:
        """The LoRA slots' bytes on one replica, before any TP split."""
        return lora_bytes(spec, max_loras=self.adapters, rank=self.lora_rank)


@dataclass(frozen=True, kw_only=True)
class Option:
    device: str
    """A GPU name from the table, or "CPU"."""
    tp: int
    weights_per_device: int
    overhead_per_device: int
    kv_budget_per_device: int
    kv_bytes_per_token: int
    capacity: memory.KVCapacity
    required_sequences: int
    cpu_kv_space_gib: int | None = None
    reason: str = ""
    """Why it does not meet the target; empty when it does."""

    @property
    def fits(self) -> bool:
        return not self.reason


@dataclass(frozen=True, kw_only=True)
class Recommendation:
    spec: ModelSpec
    params: ParamCounts
    weights_bytes: int
    request: PlanRequest
    options: tuple[Option, ...]
    chosen: Option | None
    refusal: str = ""
    lora_bytes: int = 0
    """The LoRA slots (``request.adapters`` at ``lora_rank``), counted in each overhead."""


def tp_sizes(spec: ModelSpec) -> tuple[int, ...]:
    """TP sizes vLLM accepts: they divide the attention heads, and divide the KV heads or are a
    multiple of them (vLLM then replicates KV heads)."""
    kv = spec.num_kv_heads
    return tuple(
        tp
        for tp in TP_SIZES
        if spec.num_attention_heads % tp == 0
        and (spec.mla is not None or kv % tp == 0 or tp % kv == 0)
    )


def _shortfall(capacity: memory.KVCapacity, request: PlanRequest) -> str:
    if capacity.max_sequences >= request.required_sequences:
        return ""
    return (
        f"KV cache holds {capacity.max_sequences} sequences of {request.context:,} tokens, "
        f"needs {request.required_sequences}"
    )


def evaluate_gpu(spec: ModelSpec, weights: int, gpu: Gpu, tp: int, request: PlanRequest) -> Option:
    per_gpu_weights = math.ceil(weights / tp)
    overhead = memory.gpu_overhead_bytes(
        spec,
        tp=tp,
        max_batched_tokens=gpu.max_batched_tokens,
        max_num_seqs=request.concurrency,
        enforce_eager=request.enforce_eager,
    )
    overhead += math.ceil(request.lora_bytes(spec) / tp)  # the slots are sharded like weights
    usable = int(gpu.memory_bytes * request.gpu_memory_utilization)
    budget = usable - per_gpu_weights - overhead
    per_token = memory.kv_bytes_per_token(spec, kv_dtype=request.kv_dtype, tp=tp)
    capacity = memory.kv_capacity(
        spec,
        kv_budget_bytes=budget,
        bytes_per_token=per_token,
        context=request.context,
        block_size=request.block_size or memory.GPU_BLOCK_SIZE,
        max_batched_tokens=gpu.max_batched_tokens,
    )
    if budget <= 0:
        reason = (
            f"weights {per_gpu_weights / memory.GIB:.1f} GiB + overhead "
            f"{overhead / memory.GIB:.1f} GiB per GPU exceed the usable "
            f"{usable / memory.GIB:.1f} GiB"
        )
    else:
        reason = _shortfall(capacity, request)
    return Option(
        device=gpu.name,
        tp=tp,
        weights_per_device=per_gpu_weights,
        overhead_per_device=overhead,
        kv_budget_per_device=budget,
        kv_bytes_per_token=per_token,
        capacity=capacity,
        required_sequences=request.required_sequences,
        reason=reason,
    )


def _check_request(spec: ModelSpec, request: PlanRequest) -> None:
    if request.context > spec.max_position_embeddings:
        raise PlanInputError(
            f"context {request.context:,} exceeds {spec.name}'s maximum of "
            f"{spec.max_position_embeddings:,} tokens (max_position_embeddings)"
        )
    if request.context < 1 or request.concurrency < 1:
        raise PlanInputError("context and concurrency must be at least 1")
    if not 0 < request.gpu_memory_utilization <= 1 or request.headroom < 0:
        raise PlanInputError("gpu_memory_utilization must be in (0, 1] and headroom >= 0")
    if not 0 <= request.adapters <= 256 or not 1 <= request.lora_rank <= 512:
        raise PlanInputError("adapters must be 0 to 256 and the LoRA rank 1 to 512")


def _refusal(best: Option, request: PlanRequest) -> str:
    hints = ["reduce the context or the concurrency"]
    if request.kv_dtype != "fp8":
        hints.append("use --kv-dtype fp8")
    if request.weights_dtype != "fp8":
        hints.append("use --dtype fp8 (or an AWQ/GPTQ checkpoint)")
    gives = f"{best.capacity.max_sequences} sequences of {request.context:,} tokens"
    return (
        f"nothing fits: even {best.tp}×{best.device} gives {gives} "
        f"(needs {request.required_sequences} with {request.headroom:.0%} headroom); "
        + ", ".join(hints)
    )


def recommend(
    spec: ModelSpec, request: PlanRequest, *, gpu: Gpu | None = None, tp: int | None = None
) -> Recommendation:
    """All GPU options (or those of `gpu` / `tp`), and the smallest that meets the target."""
    _check_request(spec, request)
    counts = count_params(spec)
    weights = memory.weight_bytes(spec, counts, dtype=request.weights_dtype)
    allowed = tp_sizes(spec)
    if tp is not None and tp not in allowed:
        raise PlanInputError(
            f"TP {tp} is not possible for {spec.name} ({spec.num_attention_heads} attention "
            f"heads, {spec.num_kv_heads} KV heads); possible: {', '.join(map(str, allowed))}"
        )
    candidates = sorted(
        ((g, t) for g in ((gpu,) if gpu else GPUS) for t in ((tp,) if tp else allowed)),
        key=lambda pair: gpu_order(*pair),
    )
    options = tuple(evaluate_gpu(spec, weights, g, t, request) for g, t in candidates)
    chosen = next((o for o in options if o.fits), None)
    refusal = ""
    if chosen is None:
        refusal = _refusal(max(options, key=lambda o: o.capacity.max_sequences), request)
    return Recommendation(
        spec=spec,
        params=counts,
        weights_bytes=weights,
        request=request,
        options=options,
        chosen=chosen,
        refusal=refusal,
        lora_bytes=request.lora_bytes(spec),
    )


def cpu_block_size(spec: ModelSpec, request: PlanRequest) -> int:
    """vLLM CPU's block: 128 tokens, 16 for MLA (its decode kernel needs it), or as given."""
    if spec.mla is not None:
        return memory.CPU_MLA_BLOCK_SIZE
    return request.block_size or memory.CPU_BLOCK_SIZE


def evaluate_cpu(
    spec: ModelSpec, request: PlanRequest, *, kv_space_gib: int, kv_element_bytes: int = 2
) -> Option:
    """vLLM CPU gives the KV cache exactly VLLM_CPU_KVCACHE_SPACE GiB; nothing is profiled.
    ``kv_element_bytes``: 4 where the CPU engine runs float32 (``engines.dtype``)."""
    budget = kv_space_gib * memory.GIB
    per_token = memory.kv_bytes_per_token(
        spec, kv_dtype=request.kv_dtype, auto_bytes=kv_element_bytes
    )
    capacity = memory.kv_capacity(
        spec,
        kv_budget_bytes=budget,
        bytes_per_token=per_token,
        context=request.context,
        block_size=cpu_block_size(spec, request),
        max_batched_tokens=CPU_MAX_BATCHED_TOKENS,
    )
    return Option(
        device="CPU",
        tp=1,
        weights_per_device=memory.weight_bytes(spec, count_params(spec), dtype="auto"),
        overhead_per_device=request.lora_bytes(spec),
        kv_budget_per_device=budget,
        kv_bytes_per_token=per_token,
        capacity=capacity,
        required_sequences=request.required_sequences,
        cpu_kv_space_gib=kv_space_gib,
        reason=_shortfall(capacity, request),
    )


def recommend_cpu(
    spec: ModelSpec,
    request: PlanRequest,
    *,
    kv_space_gib: int | None = None,
    kv_element_bytes: int = 2,
) -> Recommendation:
    """The CPU option at `kv_space_gib`, or at the fewest whole GiB that meet the target.
    ``kv_element_bytes``: 4 where the CPU engine runs float32 (``engines.dtype``)."""
    _check_request(spec, request)
    if kv_space_gib is None:
        per_sequence = memory.blocks_per_sequence(
            spec,
            context=request.context,
            block_size=cpu_block_size(spec, request),
            max_batched_tokens=CPU_MAX_BATCHED_TOKENS,
        )
        block_bytes = memory.kv_bytes_per_token(
            spec, kv_dtype=request.kv_dtype, auto_bytes=kv_element_bytes
        )
        block_bytes *= cpu_block_size(spec, request)
        needed = math.ceil(request.required_sequences * per_sequence) * block_bytes
        kv_space_gib = max(1, math.ceil(needed / memory.GIB))
    option = evaluate_cpu(
        spec, request, kv_space_gib=kv_space_gib, kv_element_bytes=kv_element_bytes
    )
    counts = count_params(spec)
    return Recommendation(
        spec=spec,
        params=counts,
        weights_bytes=option.weights_per_device,
        request=request,
        options=(option,),
        chosen=option if option.fits else None,
        refusal="" if option.fits else f"CPU with {kv_space_gib} GiB of KV: {option.reason}",
        lora_bytes=request.lora_bytes(spec),
    )
