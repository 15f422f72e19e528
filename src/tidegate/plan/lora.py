"""Bytes of the LoRA slots a vLLM replica started with ``--enable-lora`` allocates.

vLLM allocates, at start, for each of ``max_loras`` slots and each LoRA-wrapped linear layer, an
A matrix (rank × input dim) and a B matrix (output dim × rank) in the model's dtype, at
``max_lora_rank``, whether or not adapters are loaded. Per layer the wrapped linears are q, k,
v and o of attention and the MLP's gate, up and down projections (gate only when gated), so
one slot takes ``rank × layers × Σ(in + out) × dtype bytes``. The slots sit next to the
weights, so the KV cache gets that much less. MoE experts and MLA projections are not
counted: their LoRA support differs between vLLM releases (a plan for them is low by that).
"""

from __future__ import annotations

from tidegate.plan.model_spec import ModelSpec

LORA_DTYPE_BYTES = 2


def lora_dims_per_layer(spec: ModelSpec) -> int:
    """Σ(in + out) over the LoRA-wrapped linears of one decoder layer."""
    hidden = spec.hidden_size
    q_out = spec.num_attention_heads * spec.head_dim
    kv_out = spec.num_kv_heads * spec.head_dim
    attention = (hidden + q_out) + 2 * (hidden + kv_out) + (q_out + hidden)
    if spec.moe is not None:
        mlp_width = spec.moe.shared_intermediate_size
    else:
        mlp_width = spec.intermediate_size
    if not mlp_width:
        return attention
    projections = 2 if spec.gated_mlp else 1
    return attention + projections * (hidden + mlp_width) + (mlp_width + hidden)


def lora_bytes(
    spec: ModelSpec, *, max_loras: int, rank: int, dtype_bytes: int = LORA_DTYPE_BYTES
) -> int:
    """All ``max_loras`` slots at ``rank`` (0 without LoRA)."""
    if max_loras <= 0:
        return 0
    return max_loras * rank * spec.num_layers * lora_dims_per_layer(spec) * dtype_bytes
