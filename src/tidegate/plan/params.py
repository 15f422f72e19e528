"""Parameter counts from the architecture alone (no checkpoint needed).

Split three ways because quantization treats them differently: AWQ, GPTQ and fp8 checkpoints
shrink the projection matrices but keep embeddings, the LM head, norms, biases and MoE routers
in 16 bits.
"""

from __future__ import annotations

from dataclasses import dataclass

from tidegate.plan.model_spec import ModelSpec


@dataclass(frozen=True, kw_only=True)
class ParamCounts:
    embedding: int
    """Input embeddings plus the LM head when it is not tied to them."""
    linear: int
    """Attention and MLP (expert) projection matrices."""
    other: int
    """Norms, biases and MoE routers."""

    @property
    def total(self) -> int:
        return self.embedding + self.linear + self.other


def _attention_linear(spec: ModelSpec) -> int:
    h = spec.hidden_size
    if spec.mla is not None:
        m = spec.mla
        qk_head = m.qk_nope_head_dim + m.qk_rope_head_dim
        heads = spec.num_attention_heads
        if m.q_lora_rank is None:
            q = h * heads * qk_head
        else:
            q = h * m.q_lora_rank + m.q_lora_rank * heads * qk_head
        kv_a = h * (m.kv_lora_rank + m.qk_rope_head_dim)
        kv_b = m.kv_lora_rank * heads * (m.qk_nope_head_dim + m.v_head_dim)
        return q + kv_a + kv_b + heads * m.v_head_dim * h
    q_width = spec.num_attention_heads * spec.head_dim
    kv_width = spec.num_kv_heads * spec.head_dim
    return 2 * h * q_width + 2 * h * kv_width  # q and o, k and v


def _attention_other(spec: ModelSpec) -> int:
    if spec.mla is not None:
        q_norm = spec.mla.q_lora_rank or 0
        return q_norm + spec.mla.kv_lora_rank  # the latent norms
    if not spec.qkv_bias:
        return 0
    return (spec.num_attention_heads + 2 * spec.num_kv_heads) * spec.head_dim


def _mlp(hidden: int, intermediate: int, *, gated: bool) -> int:
    return (3 if gated else 2) * hidden * intermediate


def count_params(spec: ModelSpec) -> ParamCounts:
    h = spec.hidden_size
    layers = spec.num_layers
    embedding = spec.vocab_size * h * (1 if spec.tie_word_embeddings else 2)

    moe_layers = spec.moe.num_moe_layers if spec.moe else 0
    dense_layers = layers - moe_layers
    linear = layers * _attention_linear(spec)
    linear += dense_layers * _mlp(h, spec.intermediate_size, gated=spec.gated_mlp)
    other = layers * _attention_other(spec)
    if spec.moe is not None:
        moe = spec.moe
        per_layer = moe.num_experts * _mlp(h, moe.expert_intermediate_size, gated=spec.gated_mlp)
        per_layer += _mlp(h, moe.shared_intermediate_size, gated=spec.gated_mlp)
        linear += moe_layers * per_layer
        other += moe_layers * h * moe.num_experts  # the router
    # Gemma-2/3 normalise before and after both attention and MLP; most families only before.
    norms_per_layer = 4 if spec.model_type.startswith("gemma") and spec.model_type != "gemma" else 2
    other += (layers * norms_per_layer + 1) * h
    return ParamCounts(embedding=embedding, linear=linear, other=other)
