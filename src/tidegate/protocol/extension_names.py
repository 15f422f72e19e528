"""The names of the engine extensions a tenant's ``allowed_extensions`` may list.

Vocabulary shared by the tenant policy (which validates the setting) and the request pipeline
(which enforces it, :mod:`tidegate.pipeline.extensions`).
"""

from __future__ import annotations

from typing import Literal, get_args

ForwardedExtension = Literal[
    "remote_media_urls",
    "embeddings_input",
    "chat_template",
    "chat_template_kwargs",
    "add_generation_prompt",
    "continue_final_message",
    "add_special_tokens",
    "documents",
    "mm_processor_kwargs",
    "media_io_kwargs",
    "structured_outputs",
    "guided_decoding",
    "logits_processors",
    "return_tokens_as_token_ids",
    "return_token_ids",
    "return_prompt_text",
    "prompt_logprobs",
    "cache_salt",
    "kv_transfer_params",
    "vllm_xargs",
]
"""What a tenant's ``allowed_extensions`` may name."""

EXTENSIONS: tuple[ForwardedExtension, ...] = get_args(ForwardedExtension)
