"""Prompt token counting with the served model's own tokenizer, off the event loop.

Chat prompts are rendered with the model's chat template and tokenized without adding special
tokens (the template writes them), as vLLM does for /v1/chat/completions. Completion prompts
are tokenized with special tokens added, as vLLM does for /v1/completions. Token-id prompts are
counted as they are.

Rendering and tokenizing a long prompt takes milliseconds, so it runs in a thread pool shared by
every model (``tokenizers`` releases the GIL while it encodes). Short texts are counted inline:
the hop to a thread costs more than the work. A chat prompt is counted piece by piece between
its special tokens, with the counts of recurring pieces (system prompts, the template's own
text) cached: see ``token_pieces``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from tidegate.pipeline.chat_template import ChatTemplate
from tidegate.pipeline.token_pieces import PieceCounter

__all__ = ["NoChatTemplateError", "PromptCounter"]

# Below this many characters a count takes tens of microseconds: cheaper than a thread hop.
_INLINE_CHARS = 2048


class NoChatTemplateError(Exception):
    """The model has no chat template, so its chat prompts cannot be counted (or served)."""


def _text_size(messages: Sequence[Mapping[str, Any]]) -> int:
    size = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            size += len(content)
        elif isinstance(content, list):
            for part in content:
                text = part.get("text") if isinstance(part, Mapping) else part
                size += len(text) if isinstance(text, str) else 0
    return size


class PromptCounter:
    def __init__(
        self,
        *,
        tokenizer: Tokenizer,
        template: ChatTemplate | None,
        executor: Executor,
        inline_chars: int = _INLINE_CHARS,
    ) -> None:
        # A tokenizer.json saved with truncation or padding would silently under- or over-count;
        # transformers switches both off for an untruncated call, and so does the engine.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        # None: a tokenizer whose pieces cannot be counted apart, counted whole every time.
        self._pieces = PieceCounter.for_tokenizer(tokenizer)
        self._template = template
        self._executor = executor
        self._inline_chars = inline_chars

    @classmethod
    def from_model_dir(
        cls, model_dir: Path, *, executor: Executor, inline_chars: int = _INLINE_CHARS
    ) -> PromptCounter:
        """Load ``tokenizer.json`` and the chat template from a Hugging Face model directory."""
        return cls(
            tokenizer=Tokenizer.from_file(str(model_dir / "tokenizer.json")),
            template=ChatTemplate.from_model_dir(model_dir),
            executor=executor,
            inline_chars=inline_chars,
        )

    @property
    def has_chat_template(self) -> bool:
        return self._template is not None

    # Synchronous forms: what the thread runs, also usable from the CLI and the batch runner.

    def render_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Any] | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> str:
        if self._template is None:
            raise NoChatTemplateError("the model directory has no chat template")
        return self._template.render(messages, tools=tools, template_kwargs=template_kwargs)

    def chat_token_ids(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Any] | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> list[int]:
        text = self.render_chat(messages, tools=tools, template_kwargs=template_kwargs)
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=False).ids
        return ids

    def text_token_ids(self, text: str) -> list[int]:
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=True).ids
        return ids

    def count_chat_sync(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Any] | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> int:
        text = self.render_chat(messages, tools=tools, template_kwargs=template_kwargs)
        if self._pieces is not None:
            return self._pieces.count(text)
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    # Asynchronous forms: the request path.

    async def count_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Any] | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> int:
        """Prompt tokens of a chat request, generation prompt included.

        Raises ``ChatTemplateError`` when the template refuses the conversation and
        ``NoChatTemplateError`` when the model has no template.
        """
        if _text_size(messages) < self._inline_chars and not tools:
            return self.count_chat_sync(messages, tools=tools, template_kwargs=template_kwargs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor,
            lambda: self.count_chat_sync(messages, tools=tools, template_kwargs=template_kwargs),
        )

    async def count_text(self, prompt: str | Sequence[int]) -> int:
        """Prompt tokens of one completion prompt: a string, or a list of token ids."""
        if not isinstance(prompt, str):
            return len(prompt)
        if len(prompt) < self._inline_chars:
            return self._count_text_sync(prompt)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._count_text_sync, prompt)

    def _count_text_sync(self, text: str) -> int:
        # len() of the encoding: no list of ids is built just to be counted.
        return len(self._tokenizer.encode(text, add_special_tokens=True))

    async def count_prompts(
        self, prompt: str | Sequence[str] | Sequence[int] | Sequence[Sequence[int]]
    ) -> list[int]:
        """Tokens of each prompt of a /v1/completions request (a batch is one engine request
        per prompt)."""
        if isinstance(prompt, str):
            return [await self.count_text(prompt)]
        if prompt and all(isinstance(item, int) for item in prompt):
            return [len(prompt)]
        counts: list[int] = []
        for item in prompt:
            counts.append(await self.count_text(item))  # type: ignore[arg-type]
        return counts
