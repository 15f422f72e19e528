"""An upper bound on a prompt's tokens, read from the request body, for a model the gateway has
no tokenizer for: what the limits and budgets reserve in place of the count.

Why bytes bound tokens. A byte-level BPE tokenizer (GPT-2, Llama 3, Qwen, Mistral's Tekken)
turns text into UTF-8 bytes and merges them, so every token covers at least one byte. A
SentencePiece tokenizer with byte fallback (Llama 2, Mistral v1–v3, Gemma) emits a known piece
or the piece's bytes, so again at most one token per byte, plus the dummy-prefix space it adds
in front. A tokenizer without byte fallback maps an unknown character to one ``<unk>``. So the
UTF-8 byte count of every string in the prompt, plus a few special tokens (BOS, EOS) and that
prefix, is a true upper bound on the text's tokens. Not covered: a normaliser that expands text
(NFKC compatibility characters such as U+FDFA; none of the tokenizers above has one).

What the gateway cannot see without the model is its chat template's own text: role headers
and turn markers (a handful of tokens per message in every common template) and any default
system prompt or tool instructions it injects. Those get a fixed allowance per message and per
request, larger than the common templates need but not provable for every template; the engine's
reported usage is what is settled in the end, so a template that writes more is charged in full.
Configure the model's ``tokenizer`` for an exact count and a tight reservation. Image and audio
parts count their URL or data bytes, which is far more than their tokens for ``data:`` URLs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

__all__ = ["PER_MESSAGE", "PER_PROMPT", "PER_REQUEST", "PER_TOOLS", "prompt_token_bound"]

PER_PROMPT = 4
"""Added per text prompt: BOS and EOS (at most two special tokens are added to one sequence),
SentencePiece's dummy prefix, and one to spare."""
PER_MESSAGE = 8
"""Added per chat message for the template's role header and turn markers (Llama 3: 5 tokens,
ChatML/Qwen: 5, Gemma: 5, Mistral: 2–4)."""
PER_REQUEST = 64
"""Added per chat request for the template's preamble and generation prompt (Llama 3.1's date
header and Qwen's or SmolLM2's default system prompt are 20–30 tokens)."""
PER_TOOLS = 1024
"""Added when a chat request carries tools: templates wrap tool definitions in instructions."""


def prompt_token_bound(payload: Mapping[str, Any], *, chat: bool) -> int:
    """At least as many tokens as the engine's tokenizer can count for this request's prompt
    (summed over a batch of prompts); see the module docstring for why."""
    if not chat:
        prompt = payload.get("prompt")
        if isinstance(prompt, str):
            return _text_bytes(prompt) + PER_PROMPT
        if isinstance(prompt, list):
            return sum(_value_bytes(item) + PER_PROMPT for item in prompt)
        return _value_bytes(prompt) + PER_PROMPT
    messages = payload.get("messages")
    count = len(messages) if isinstance(messages, list) else 0
    bound = _value_bytes(messages) + count * PER_MESSAGE + PER_REQUEST
    tools = payload.get("tools")
    if tools:
        # Templates render tools as JSON with spaces after separators (json.dumps defaults)
        # and often indented: twice the compact form covers both.
        bound += 2 * len(orjson.dumps(tools)) + PER_TOOLS
    return bound


def _text_bytes(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _value_bytes(value: Any) -> int:
    """UTF-8 bytes of every string in ``value`` (dict values only: keys are structure); a
    token id counts one token."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += _text_bytes(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            total += 1
    return total
