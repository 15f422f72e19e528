"""A model's chat template, rendered the way transformers' ``apply_chat_template`` renders it.

vLLM renders chat prompts with transformers (a sandboxed Jinja environment with ``trim_blocks``,
``lstrip_blocks``, ``raise_exception``, a ``tojson`` that does not HTML-escape, and the
tokenizer's named special tokens as variables), then tokenizes the text without adding special
tokens. Doing the same here makes the gateway's prompt count the engine's prompt count, with no
torch or transformers in the gateway's environment.

Messages are first normalised as vLLM's ``chat_utils`` does: text content parts are joined with
a newline for templates that expect a string, or kept as ``{"type": "text"}`` parts for templates
that iterate over the content ("openai" content format).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["ChatTemplate", "ChatTemplateError", "read_special_tokens"]

# The named special tokens transformers passes to every template.
_SPECIAL_TOKEN_NAMES = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)
_TEXT_PART_KEYS = {
    "text": "text",
    "input_text": "text",
    "output_text": "text",
    "refusal": "refusal",
    "thinking": "thinking",
}
# A template that loops over a message's content wants a list of parts (vLLM's "openai"
# content format); every other template gets one string per message.
_ITERATES_CONTENT = re.compile(
    r"\{%-?\s*for\s+\w+\s+in\s+\w+\s*(?:\[\s*['\"]content['\"]\s*\]|\.content)"
)

_RESERVED = frozenset({"messages", "tools", "documents", "add_generation_prompt"})


class ChatTemplateError(Exception):
    """The template refused the conversation (``raise_exception``) or failed to render it."""


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _token_text(value: Any) -> str | None:
    # tokenizer_config.json stores a token as a string or as a serialised AddedToken.
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def read_special_tokens(tokenizer_config: Mapping[str, Any]) -> dict[str, str]:
    tokens: dict[str, str] = {}
    for name in _SPECIAL_TOKEN_NAMES:
        text = _token_text(tokenizer_config.get(name))
        if text is not None:
            tokens[name] = text
    return tokens


def _template_source(model_dir: Path, tokenizer_config: Mapping[str, Any]) -> str | None:
    # transformers >= 4.43 saves the template beside the config; older models embed it.
    standalone = model_dir / "chat_template.jinja"
    if standalone.is_file():
        return standalone.read_text(encoding="utf-8")
    embedded = tokenizer_config.get("chat_template")
    if isinstance(embedded, str):
        return embedded
    if isinstance(embedded, list):
        named = {t.get("name"): t.get("template") for t in embedded if isinstance(t, Mapping)}
        default = named.get("default")
        return default if isinstance(default, str) else None
    return None


def _text_parts(content: Any) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    texts: list[str] = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, Mapping):
            key = _TEXT_PART_KEYS.get(str(part.get("type")))
            text = part.get(key) if key else None
            if isinstance(text, str):
                texts.append(text)
    return texts


def _parse_arguments(tool_calls: Sequence[Any]) -> list[Any]:
    # vLLM hands templates the arguments as a dict, since many templates call `tojson` on them.
    parsed: list[Any] = []
    for call in tool_calls:
        function = call.get("function") if isinstance(call, Mapping) else None
        arguments = function.get("arguments") if isinstance(function, Mapping) else None
        if isinstance(arguments, str):
            try:
                decoded = json.loads(arguments)
            except ValueError:
                decoded = arguments
            call = {**call, "function": {**function, "arguments": decoded}}  # type: ignore[dict-item]
        parsed.append(call)
    return parsed


class ChatTemplate:
    def __init__(self, *, source: str, special_tokens: Mapping[str, str]) -> None:
        environment = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
        )
        environment.filters["tojson"] = _tojson
        environment.globals["raise_exception"] = _raise_exception
        environment.globals["strftime_now"] = _strftime_now
        self._environment = environment
        self._template = environment.from_string(source)
        # The template's globals merged once, with the special tokens over them: render() then
        # builds one dict per call, where Template.render copies a ChainMap of globals each time.
        self._base_variables = {**self._template.globals, **special_tokens}
        self.content_as_parts = _ITERATES_CONTENT.search(source) is not None

    @classmethod
    def from_model_dir(cls, model_dir: Path) -> ChatTemplate | None:
        """The model's template, or None when it has none (a base model: no chat route)."""
        config_path = model_dir / "tokenizer_config.json"
        config: dict[str, Any] = {}
        if config_path.is_file():
            config = json.loads(config_path.read_text(encoding="utf-8"))
        source = _template_source(model_dir, config)
        if source is None:
            return None
        return cls(source=source, special_tokens=read_special_tokens(config))

    def normalise(self, messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The messages as vLLM hands them to the template."""
        conversation: list[dict[str, Any]] = []
        for message in messages:
            texts = _text_parts(message.get("content"))
            content: Any = (
                [{"type": "text", "text": text} for text in texts]
                if self.content_as_parts
                else "\n".join(texts)
            )
            item: dict[str, Any] = {"role": message.get("role"), "content": content}
            tool_calls = message.get("tool_calls")
            if message.get("role") == "assistant" and isinstance(tool_calls, list):
                item["tool_calls"] = _parse_arguments(tool_calls)
            if message.get("role") == "tool" and "tool_call_id" in message:
                item["tool_call_id"] = message["tool_call_id"]
            if isinstance(message.get("name"), str):
                item["name"] = message["name"]
            conversation.append(item)
        return conversation

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Any] | None = None,
        add_generation_prompt: bool = True,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> str:
        # Client kwargs override the special tokens, as in transformers, but not the conversation.
        variables = {**self._base_variables}
        if template_kwargs:
            variables.update((k, v) for k, v in template_kwargs.items() if k not in _RESERVED)
        variables["messages"] = self.normalise(messages)
        variables["tools"] = list(tools) if tools is not None else None
        variables["documents"] = None
        variables["add_generation_prompt"] = add_generation_prompt
        try:
            return self._render(variables)
        except jinja2.exceptions.TemplateError as error:
            raise ChatTemplateError(str(error)) from None
        except (TypeError, ValueError, KeyError, AttributeError) as error:
            # A template doing arithmetic on a missing field ("None + str") fails the same way
            # in the engine; it is the conversation that does not fit the template.
            raise ChatTemplateError(f"{type(error).__name__}: {error}") from None

    def _render(self, variables: dict[str, Any]) -> str:
        # What Template.render does, but the variables become the context as they are
        # (shared=True), since they already hold the globals.
        template = self._template
        try:
            context = template.new_context(variables, shared=True)
            text: str = self._environment.concat(template.root_render_func(context))
        except Exception:
            self._environment.handle_exception()
        return text
