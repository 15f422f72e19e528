"""A model's architecture as the planner needs it, parsed from a Hugging Face config.json.

Only what decides memory is kept: layer and head counts, sizes, mixture-of-experts shape,
sliding-window layers, multi-head latent attention (MLA) and the checkpoint's quantization.
Multimodal configs keep the language model under ``text_config``; its keys win.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tidegate.plan.errors import ModelConfigError

# Families whose MLP is two matrices (up, down) instead of gated three (gate, up, down).
UNGATED_MODEL_TYPES = frozenset({"gpt2", "gpt_neox", "gptj", "opt", "falcon", "bloom", "phi"})
# Families that carry bias on the q, k and v projections without saying so in config.json.
QKV_BIAS_MODEL_TYPES = frozenset({"qwen2", "qwen2_moe"})
SUPPORTED_QUANT_METHODS = frozenset({"awq", "gptq", "fp8"})


@dataclass(frozen=True, kw_only=True)
class MoE:
    num_experts: int
    experts_per_token: int
    expert_intermediate_size: int
    num_moe_layers: int
    """Layers whose MLP is the expert block; the rest are dense (DeepSeek's first_k_dense)."""
    shared_intermediate_size: int = 0
    """Total intermediate size of the always-active shared experts (0: none)."""


@dataclass(frozen=True, kw_only=True)
class SlidingWindow:
    window: int
    num_layers: int
    """How many layers attend only to the last `window` tokens (all of them for Mistral-7B,
    every other one for Gemma-2)."""


@dataclass(frozen=True, kw_only=True)
class MLA:
    """Multi-head latent attention (DeepSeek-V2/V3): vLLM caches the compressed latent."""

    kv_lora_rank: int
    qk_rope_head_dim: int
    qk_nope_head_dim: int
    v_head_dim: int
    q_lora_rank: int | None


@dataclass(frozen=True, kw_only=True)
class Quantization:
    method: str
    """awq, gptq or fp8 (the checkpoint's quant_method)."""
    bits: int
    group_size: int
    """Weights sharing one scale (AWQ/GPTQ groups; for block fp8 the block's element count)."""


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    name: str
    model_type: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    max_position_embeddings: int
    torch_dtype: str
    gated_mlp: bool = True
    qkv_bias: bool = False
    moe: MoE | None = None
    sliding_window: SlidingWindow | None = None
    mla: MLA | None = None
    quantization: Quantization | None = None


def _int(cfg: Mapping[str, Any], *keys: str, default: int | None = None) -> int:
    for key in keys:
        value = cfg.get(key)
        if value is not None:
            return int(value)
    if default is None:
        raise ModelConfigError(f"config.json has none of {', '.join(keys)}")
    return default


def _moe(cfg: Mapping[str, Any], num_layers: int) -> MoE | None:
    num_experts = _int(cfg, "num_local_experts", "n_routed_experts", "num_experts", default=0)
    if num_experts <= 1:
        return None
    first_dense = _int(cfg, "first_k_dense_replace", default=0)
    freq = _int(cfg, "moe_layer_freq", "decoder_sparse_step", default=1)
    dense_only = set(cfg.get("mlp_only_layers") or [])
    moe_layers = sum(
        1
        for i in range(num_layers)
        if i >= first_dense and (i - first_dense) % freq == 0 and i not in dense_only
    )
    expert_size = _int(cfg, "moe_intermediate_size", "intermediate_size")
    shared = _int(cfg, "n_shared_experts", default=0) * expert_size
    shared += _int(cfg, "shared_expert_intermediate_size", default=0)
    return MoE(
        num_experts=num_experts,
        experts_per_token=_int(cfg, "num_experts_per_tok"),
        expert_intermediate_size=expert_size,
        num_moe_layers=moe_layers,
        shared_intermediate_size=shared,
    )


def _sliding_window(cfg: Mapping[str, Any], num_layers: int) -> SlidingWindow | None:
    window = cfg.get("sliding_window")
    if window is None or cfg.get("use_sliding_window") is False:
        return None
    layer_types = cfg.get("layer_types")
    if layer_types is not None:
        count = sum(1 for t in layer_types if t == "sliding_attention")
    elif cfg.get("model_type") == "gemma2":
        count = (num_layers + 1) // 2  # HF: even layers slide, odd layers attend globally
    elif cfg.get("sliding_window_pattern"):
        pattern = int(cfg["sliding_window_pattern"])  # Gemma 3: every pattern-th layer is global
        count = sum(1 for i in range(num_layers) if (i + 1) % pattern != 0)
    elif cfg.get("max_window_layers") is not None and cfg.get("model_type", "").startswith("qwen"):
        count = max(0, num_layers - int(cfg["max_window_layers"]))
    else:
        count = num_layers  # Mistral-7B-v0.1 style: every layer slides
    return SlidingWindow(window=int(window), num_layers=count) if count else None


def _mla(cfg: Mapping[str, Any]) -> MLA | None:
    if cfg.get("kv_lora_rank") is None:
        return None
    q_lora = cfg.get("q_lora_rank")
    return MLA(
        kv_lora_rank=_int(cfg, "kv_lora_rank"),
        qk_rope_head_dim=_int(cfg, "qk_rope_head_dim"),
        qk_nope_head_dim=_int(cfg, "qk_nope_head_dim"),
        v_head_dim=_int(cfg, "v_head_dim"),
        q_lora_rank=None if q_lora is None else int(q_lora),
    )


def _quantization(cfg: Mapping[str, Any]) -> Quantization | None:
    qc = cfg.get("quantization_config")
    if not qc:
        return None
    method = str(qc.get("quant_method", "")).lower()
    if method not in SUPPORTED_QUANT_METHODS:
        raise ModelConfigError(
            f"quantization {method or 'unknown'!r} is not modelled by the planner "
            f"(supported: {', '.join(sorted(SUPPORTED_QUANT_METHODS))})"
        )
    if method == "fp8":
        block = qc.get("weight_block_size") or [0, 0]
        return Quantization(method=method, bits=8, group_size=int(block[0]) * int(block[1]))
    return Quantization(
        method=method,
        bits=_int(qc, "bits", "w_bit"),
        group_size=_int(qc, "group_size", "q_group_size", default=128),
    )


def spec_from_config(config: Mapping[str, Any], *, name: str) -> ModelSpec:
    """Describe a model from its parsed config.json. Raises ModelConfigError."""
    cfg: dict[str, Any] = {**config, **(config.get("text_config") or {})}
    if "quantization_config" in config:
        cfg["quantization_config"] = config["quantization_config"]
    num_layers = _int(cfg, "num_hidden_layers", "n_layer", "num_layers")
    hidden = _int(cfg, "hidden_size", "n_embd", "d_model")
    heads = _int(cfg, "num_attention_heads", "n_head")
    model_type = str(cfg.get("model_type", "unknown"))
    mla = _mla(cfg)
    return ModelSpec(
        name=name,
        model_type=model_type,
        num_layers=num_layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        # MLA keeps one latent per token, not per head; vLLM treats it as a single KV head.
        num_kv_heads=1 if mla else _int(cfg, "num_key_value_heads", default=heads),
        head_dim=_int(cfg, "head_dim", default=hidden // heads),
        intermediate_size=_int(cfg, "intermediate_size", "n_inner", default=4 * hidden),
        vocab_size=_int(cfg, "vocab_size"),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        max_position_embeddings=_int(cfg, "max_position_embeddings", "n_positions"),
        torch_dtype=str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16"),
        gated_mlp=model_type not in UNGATED_MODEL_TYPES,
        qkv_bias=bool(cfg.get("attention_bias", False)) or model_type in QKV_BIAS_MODEL_TYPES,
        moe=_moe(cfg, num_layers),
        sliding_window=_sliding_window(cfg, num_layers),
        mla=mla,
        quantization=_quantization(cfg),
    )
