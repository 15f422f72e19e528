"""Workloads: the sequence of prompts a run sends, the same sequence to every target.

- synthetic: random text with input and output lengths drawn from a distribution (fixed,
  uniform within ±spread, or normal with std = spread × mean), sized in tokens.
- shared-prefix: multi-turn conversations; each starts from one of a few shared system prompts
  and carries its earlier turns, as a chat client does (for prefix-cache and affinity studies).
  Requests go turn by turn across conversations, so turn t follows turn t-1 of the same one.
- jsonl: one prompt per line, ``{"messages": [...]}`` or ``{"prompt": "..."}``, with an optional
  ``"max_tokens"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson

from tidegate_bench.tokenizer import TokenCounter

LengthKind = Literal["fixed", "uniform", "normal"]


@dataclass(frozen=True, kw_only=True)
class Prompt:
    messages: tuple[dict[str, Any], ...]
    max_tokens: int | None
    input_tokens: int | None
    """The client's own count of the prompt text (chat template not included)."""

    def text(self) -> str:
        """The messages as one text, for the completions API."""
        return "\n".join(str(m.get("content", "")) for m in self.messages)


@dataclass(frozen=True, kw_only=True)
class Lengths:
    mean: int
    kind: LengthKind = "fixed"
    spread: float = 0.0

    def draw(self, rng: np.random.Generator, n: int) -> list[int]:
        if self.kind == "uniform" and self.spread > 0:
            lo = max(1, round(self.mean * (1 - self.spread)))
            hi = max(lo, round(self.mean * (1 + self.spread)))
            return [int(v) for v in rng.integers(lo, hi + 1, size=n)]
        if self.kind == "normal" and self.spread > 0:
            values = rng.normal(self.mean, self.spread * self.mean, size=n)
            return [max(1, round(float(v))) for v in values]
        return [max(1, self.mean)] * n


def synthetic(
    *, count: int, input_len: Lengths, output_len: Lengths, counter: TokenCounter, seed: int
) -> list[Prompt]:
    rng = np.random.default_rng(seed)
    ins, outs = input_len.draw(rng, count), output_len.draw(rng, count)
    prompts = []
    for n_in, n_out in zip(ins, outs, strict=True):
        text = counter.text(n_in, rng)
        messages = ({"role": "user", "content": text},)
        tokens = counter.count(text)
        prompts.append(Prompt(messages=messages, max_tokens=n_out, input_tokens=tokens))
    return prompts


def shared_prefix(
    *,
    conversations: int,
    turns: int,
    prefixes: int,
    prefix_len: int,
    input_len: int,
    output_len: int,
    counter: TokenCounter,
    seed: int,
) -> list[Prompt]:
    rng = np.random.default_rng(seed)
    systems = [counter.text(prefix_len, rng) for _ in range(max(1, prefixes))]
    histories: list[list[dict[str, Any]]] = [
        [{"role": "system", "content": systems[c % len(systems)]}] for c in range(conversations)
    ]
    prompts = []
    for _turn in range(turns):
        for history in histories:
            history.append({"role": "user", "content": counter.text(input_len, rng)})
            tokens = sum(counter.count(str(m["content"])) for m in history)
            prompts.append(
                Prompt(messages=tuple(history), max_tokens=output_len, input_tokens=tokens)
            )
            # A stand-in answer keeps every target's conversation identical.
            history.append({"role": "assistant", "content": counter.text(output_len, rng)})
    return prompts


def from_jsonl(
    path: Path, *, default_max_tokens: int | None, counter: TokenCounter
) -> list[Prompt]:
    prompts = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not JSON: {exc}") from exc
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number}: expected an object")
        if isinstance(row.get("messages"), list):
            messages = tuple(dict(m) for m in row["messages"])
        elif isinstance(text := row.get("prompt", row.get("text")), str):
            messages = ({"role": "user", "content": text},)
        else:
            raise ValueError(f"{path}:{number}: needs 'messages' (a list) or 'prompt' (a string)")
        max_tokens = row.get("max_tokens", default_max_tokens)
        if max_tokens is not None and not isinstance(max_tokens, int):
            raise ValueError(f"{path}:{number}: max_tokens must be an integer")
        tokens = sum(counter.count(str(m.get("content", ""))) for m in messages)
        prompts.append(Prompt(messages=messages, max_tokens=max_tokens, input_tokens=tokens))
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts
