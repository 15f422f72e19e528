"""Request bodies of the OpenAI completion routes, checked before anything leaves the gateway.

The checks read the parsed JSON object directly (no model is built): the count caps come first
(``messages``, the prompts of a batched ``prompt``), so a body with 100,000 messages is refused
after one ``len``, then every field tidegate or the engines rely on is type-checked strictly —
``"max_tokens": "4"`` and ``"stream": "true"`` are errors, not coerced. Unknown fields pass,
because engines accept many extensions (vLLM's ``guided_json`` ...); the gateway forwards the
client's own JSON object, so an unknown field is never mangled.

A large body is counted even before it is parsed (``check_counts_raw``): simdjson indexes the
bytes in C and counts an array without building a Python object per element, so 100,000
messages cost a few milliseconds to refuse instead of the 50-100 ms of a full parse, during
which the event loop (and every other tenant's request) waits.

Each failure is a ``RequestValidationFailure`` whose ``param`` names the field as a dotted path
(``messages.3.role``) and whose message says what was expected.

``CompletionRequest`` is the body once checked: the one object validation, the limits, routing
and the upstream exchange all read, from the parse to the wire. It keeps every field the client
sent (unknown ones pass through untouched), the gateway changes it only through ``set`` and
``drop``, and it serialises itself at most once per wire shape (``encode``), however many
attempts the upstream takes.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import simdjson

from tidegate.protocol.endpoints import Endpoint

__all__ = [
    "BodyCaps",
    "CompletionRequest",
    "RequestValidationFailure",
    "check_body",
    "check_chat",
    "check_completion",
    "check_counts_raw",
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_TOKEN_COUNT_MAX = 2**31 - 1
"""No model's context comes near this; larger values only overflow engines' int32 fields."""
PRESCAN_BYTES = 64 * 1024
"""Bodies from this size on are counted before they are parsed; smaller ones parse in well
under a millisecond anyway."""
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


@dataclass(frozen=True, slots=True, kw_only=True)
class BodyCaps:
    """Count caps applied before any per-item work."""

    max_messages: int
    max_prompts: int
    max_content_parts: int = 1024
    """Over all the messages of a chat request."""
    max_tools: int = 128


class RequestValidationFailure(Exception):
    """A body that does not match the schema; ``message`` says which field and how to fix it."""

    def __init__(self, message: str, param: str | None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


def _shown(value: object) -> str:
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57]) + "..."
    if isinstance(value, (bool, float)) or value is None:
        return repr(value)
    if isinstance(value, int):
        text = str(value)
        return text if len(text) <= 24 else f"an integer of {len(text)} digits"
    return f"a JSON {'object' if isinstance(value, dict) else 'array'}"


def _invalid(param: str, expected: str, value: object) -> RequestValidationFailure:
    return RequestValidationFailure(
        f"Invalid value for '{param}': expected {expected} (got {_shown(value)}).", param
    )


def _missing(param: str) -> RequestValidationFailure:
    return RequestValidationFailure(f"Missing required parameter: '{param}'.", param)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int(data: Mapping[str, Any], name: str, low: int, high: int = _TOKEN_COUNT_MAX) -> None:
    value = data.get(name)
    if value is not None and (not _is_int(value) or not low <= value <= high):
        raise _invalid(name, f"an integer from {low} to {high}", value)


def _number(
    data: Mapping[str, Any],
    name: str,
    low: float,
    high: float | None,
    *,
    open_low: bool = False,
) -> None:
    value = data.get(name)
    if value is None:
        return
    fits = (
        _is_number(value)
        and (low < value if open_low else low <= value)
        and (high is None or value <= high)
    )
    if not fits:
        expected = f"a number {'above' if open_low else 'from'} {low:g}"
        if high is not None:
            expected += f" up to {high:g}"
        raise _invalid(name, expected, value)


def _typed(data: Mapping[str, Any], name: str, kind: type, what: str) -> None:
    """``kind``: bool, str, dict or list (no int here: a JSON true is a Python int)."""
    value = data.get(name)
    if value is not None and not isinstance(value, kind):
        raise _invalid(name, what, value)


_BOOLS = (
    "stream",
    "echo",
    "ignore_eos",
    "skip_special_tokens",
    "include_stop_str_in_output",
    "parallel_tool_calls",
    "add_generation_prompt",
    "continue_final_message",
)
_STRINGS = ("user", "suffix", "service_tier", "reasoning_effort")
_OBJECTS = ("response_format", "logit_bias", "chat_template_kwargs", "metadata")


def _common(data: Mapping[str, Any], caps: BodyCaps) -> None:
    model = data.get("model")
    if model is None:
        raise _missing("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model", "the name of a model, a non-empty string", model)
    for name in _BOOLS:
        _typed(data, name, bool, "true or false")
    for name in _STRINGS:
        _typed(data, name, str, "a string")
    for name in _OBJECTS:
        _typed(data, name, dict, "a JSON object")
    _int(data, "max_tokens", 1)
    # Chat's field; on /v1/completions some engines read it too, so it is typed on both.
    _int(data, "max_completion_tokens", 1)
    _int(data, "min_tokens", 0)
    _int(data, "n", 1)
    _int(data, "best_of", 1)
    _int(data, "prompt_logprobs", 0)
    _int(data, "top_k", -1)
    _int(data, "seed", INT64_MIN, INT64_MAX)
    _number(data, "temperature", 0, 2)
    _number(data, "top_p", 0, 1, open_low=True)
    _number(data, "min_p", 0, 1)
    _number(data, "presence_penalty", -2, 2)
    _number(data, "frequency_penalty", -2, 2)
    _number(data, "repetition_penalty", 0, None, open_low=True)
    _stream_options(data.get("stream_options"))
    _stop(data.get("stop"))
    _logit_bias(data.get("logit_bias"))
    tools = data.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _invalid("tools", "an array of tool objects", tools)
        _tool_count(len(tools), caps)
        for index, tool in enumerate(tools):
            if not isinstance(tool, dict):
                raise _invalid(f"tools.{index}", "a tool object", tool)
    choice = data.get("tool_choice")
    if choice is not None and not isinstance(choice, (str, dict)):
        raise _invalid("tool_choice", "'none', 'auto', 'required' or a tool object", choice)


def _stream_options(options: object) -> None:
    if options is None:
        return
    if not isinstance(options, dict):
        raise _invalid("stream_options", "a JSON object", options)
    for name in ("include_usage", "continuous_usage_stats"):
        value = options.get(name)
        if value is not None and not isinstance(value, bool):
            raise _invalid(f"stream_options.{name}", "true or false", value)


def _stop(stop: object) -> None:
    if stop is None or isinstance(stop, str):
        return
    if not isinstance(stop, list) or not all(isinstance(item, str) for item in stop):
        raise _invalid("stop", "a string or an array of strings", stop)


def _logit_bias(bias: object) -> None:
    if not isinstance(bias, dict):
        return
    for token, value in bias.items():
        if not _is_number(value) or not -100 <= value <= 100:
            raise _invalid(f"logit_bias.{token}", "a number from -100 to 100", value)


def _message_count(count: int, caps: BodyCaps) -> None:
    if count > caps.max_messages:
        raise RequestValidationFailure(
            f"The request has {count:,} messages; at most {caps.max_messages:,} are "
            "allowed. Drop or summarise earlier turns.",
            "messages",
            "too_many_messages",
        )


def _prompt_count(count: int, caps: BodyCaps) -> None:
    if count > caps.max_prompts:
        raise RequestValidationFailure(
            f"The request has {count:,} prompts; at most {caps.max_prompts:,} are "
            "allowed in one request. Send the rest in further requests (or as a batch).",
            "prompt",
            "too_many_prompts",
        )


def _content_parts(messages: list[Any]) -> int:
    return sum(
        len(content)
        for message in messages
        if isinstance(message, dict) and isinstance(content := message.get("content"), list)
    )


def _part_count(count: int, caps: BodyCaps) -> None:
    if count > caps.max_content_parts:
        raise RequestValidationFailure(
            f"The messages hold {count:,} content parts; at most {caps.max_content_parts:,} are "
            "allowed in one request. Join adjacent text parts, or send fewer images and files.",
            "messages",
            "too_many_content_parts",
        )


def _tool_count(count: int, caps: BodyCaps) -> None:
    if count > caps.max_tools:
        raise RequestValidationFailure(
            f"The request declares {count:,} tools; at most {caps.max_tools:,} are allowed. "
            "Offer only the tools this turn may need.",
            "tools",
            "too_many_tools",
        )


def check_counts_raw(route: Endpoint, body: bytes, caps: BodyCaps) -> None:
    """The count caps on a large body's bytes, before it is parsed. A body that is not valid
    JSON, or not an object, passes: the full parse says what is wrong with it."""
    if len(body) < PRESCAN_BYTES:
        return
    try:
        document = simdjson.Parser().parse(body)
    except ValueError:
        return
    if not isinstance(document, simdjson.Object):
        return
    tools = document.get("tools")
    if isinstance(tools, simdjson.Array):
        _tool_count(len(tools), caps)
    if route == "chat":
        messages = document.get("messages")
        if isinstance(messages, simdjson.Array):
            _message_count(len(messages), caps)
            parts = 0
            for message in messages:  # at most max_messages of them
                if isinstance(message, simdjson.Object):
                    content = message.get("content")
                    if isinstance(content, simdjson.Array):
                        parts += len(content)
            _part_count(parts, caps)
        return
    prompt = document.get("prompt")
    # An array of token ids is one prompt; an array of strings or of id arrays is several.
    if isinstance(prompt, simdjson.Array) and len(prompt) and not _is_int(prompt[0]):
        _prompt_count(len(prompt), caps)


def check_chat(data: Mapping[str, Any], caps: BodyCaps) -> None:
    """The body of POST /v1/chat/completions."""
    messages = data.get("messages")
    if messages is None:
        raise _missing("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages", "a non-empty array of message objects", messages)
    _message_count(len(messages), caps)
    _part_count(_content_parts(messages), caps)
    _common(data, caps)
    _int(data, "top_logprobs", 0)
    _typed(data, "logprobs", bool, "true or false")
    for index, message in enumerate(messages):
        _message(message, f"messages.{index}")


def _message(message: object, at: str) -> None:
    if not isinstance(message, dict):
        raise _invalid(at, "a message object with 'role' and 'content'", message)
    role = message.get("role")
    if role is None:
        raise _missing(f"{at}.role")
    if not isinstance(role, str) or role not in _ROLES:  # a dict is unhashable
        raise _invalid(f"{at}.role", f"one of {', '.join(sorted(_ROLES))}", role)
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        if not isinstance(content, list):
            raise _invalid(f"{at}.content", "a string or an array of content parts", content)
        for index, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise _invalid(
                    f"{at}.content.{index}", "a content part object with a 'type' string", part
                )
    for name in ("name", "tool_call_id"):
        value = message.get(name)
        if value is not None and not isinstance(value, str):
            raise _invalid(f"{at}.{name}", "a string", value)
    calls = message.get("tool_calls")
    if calls is not None and not isinstance(calls, list):
        raise _invalid(f"{at}.tool_calls", "an array of tool calls", calls)


def check_completion(data: Mapping[str, Any], caps: BodyCaps) -> None:
    """The body of POST /v1/completions."""
    if "prompt" not in data or data["prompt"] is None:
        raise _missing("prompt")
    prompt = data["prompt"]
    batched = isinstance(prompt, list) and bool(prompt) and not _is_int(prompt[0])
    if batched:
        _prompt_count(len(prompt), caps)
    _common(data, caps)
    _int(data, "logprobs", 0)
    _prompt(prompt)


_PROMPT_SHAPE = "a string, an array of strings, an array of token ids or an array of those"


def _prompt(prompt: object) -> None:
    if isinstance(prompt, str):
        return
    if not isinstance(prompt, list) or not prompt:
        raise _invalid("prompt", _PROMPT_SHAPE, prompt)
    first = prompt[0]
    if isinstance(first, str):
        for index, item in enumerate(prompt):
            if not isinstance(item, str):
                raise _invalid(f"prompt.{index}", "a string, like the other prompts", item)
    elif _is_int(first):
        _token_ids(prompt, "prompt")
    elif isinstance(first, list):
        for index, item in enumerate(prompt):
            if not isinstance(item, list) or not item:
                raise _invalid(f"prompt.{index}", "a non-empty array of token ids", item)
            _token_ids(item, f"prompt.{index}")
    else:
        raise _invalid("prompt", _PROMPT_SHAPE, prompt)


def _token_ids(ids: list[Any], at: str) -> None:
    for index, token in enumerate(ids):
        if not _is_int(token) or not 0 <= token <= _TOKEN_COUNT_MAX:
            raise _invalid(f"{at}.{index}", "a token id, an integer of at least 0", token)


def check_body(route: Endpoint, data: Mapping[str, Any], caps: BodyCaps) -> None:
    """The schema check of a completion route's body (``RequestValidationFailure`` if not)."""
    if route == "chat":
        check_chat(data, caps)
    else:
        check_completion(data, caps)


class CompletionRequest:
    """A completion route's body, schema-checked (``checked``), as the gateway forwards it.

    ``model`` and ``stream`` are typed once here; every other field is read with ``get`` or
    through ``fields`` (a read-only view). Edits go through ``set`` and ``drop``, which also
    forget the cached encodings, so nothing is sent that the gateway did not mean to send.
    """

    __slots__ = ("route", "model", "stream", "_fields", "_encoded", "encodings")

    def __init__(self, route: Endpoint, fields: dict[str, Any]) -> None:
        """``fields``: the parsed JSON object, owned by the request from now on."""
        self.route: Endpoint = route
        self._fields = fields
        self.model: str = fields.get("model") or ""
        self.stream: bool = fields.get("stream") is True
        self._encoded: dict[Hashable, bytes] = {}
        self.encodings = 0
        """Bodies serialised so far (one per wire shape; the tests count them)."""

    @classmethod
    def checked(cls, route: Endpoint, fields: dict[str, Any], caps: BodyCaps) -> CompletionRequest:
        """The schema check (``RequestValidationFailure`` if not), then the typed request."""
        check_body(route, fields, caps)
        return cls(route, fields)

    @property
    def fields(self) -> Mapping[str, Any]:
        """Every field as it will be sent (the client's, with the gateway's edits)."""
        return self._fields

    def get(self, name: str, default: Any = None) -> Any:
        return self._fields.get(name, default)

    def __contains__(self, name: str) -> bool:
        return name in self._fields

    def set(self, name: str, value: Any) -> None:
        self._fields[name] = value
        self._encoded.clear()
        if name == "model":
            self.model = value
        elif name == "stream":
            self.stream = value is True

    def drop(self, name: str) -> None:
        self._fields.pop(name, None)
        self._encoded.clear()

    def derive(self, **changes: Any) -> CompletionRequest:
        """A shallow copy with ``changes`` (a shadow's stream, say); this one is untouched."""
        return CompletionRequest(self.route, {**self._fields, **changes})

    def encode(self, shape: Hashable, build: Callable[[Mapping[str, Any]], Any]) -> bytes:
        """The body for one wire shape (a provider, model and priority): ``build`` turns the
        fields into the JSON value to send; it runs, and is serialised, once per shape."""
        body = self._encoded.get(shape)
        if body is None:
            body = self._encoded[shape] = orjson.dumps(build(self._fields))
            self.encodings += 1
        return body
