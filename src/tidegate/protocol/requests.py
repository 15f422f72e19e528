"""Request bodies of the OpenAI completion routes, validated before anything leaves the gateway.

The models check the fields tidegate and the engines rely on and allow everything else through
(``extra="allow"``), because engines accept many extensions (vLLM's ``top_k``,
``guided_json`` ...). The gateway forwards the client's own JSON object, not a re-serialised
model, so an unknown field is never mangled.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "ChatCompletionRequest",
    "CompletionRequest",
    "RequestValidationFailure",
    "validate_chat",
    "validate_completion",
]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", strict=False)


class StreamOptions(_Lenient):
    include_usage: bool | None = None


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class _SamplingFields(_Lenient):
    model: Annotated[str, Field(min_length=1)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    n: Annotated[int, Field(ge=1)] | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None


class ChatCompletionRequest(_SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None


class CompletionRequest(_SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]


class RequestValidationFailure(Exception):
    """A body that does not match the schema; ``message`` says which field and how to fix it."""

    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def _explain(error: ValidationError) -> RequestValidationFailure:
    first = error.errors(include_url=False)[0]
    loc = ".".join(str(part) for part in first["loc"]) or None
    if first["type"] == "missing":
        return RequestValidationFailure(f"Missing required parameter: '{loc}'.", loc)
    got = first.get("input")
    shown = repr(got) if isinstance(got, (int, float, bool, str)) else type(got).__name__
    if isinstance(got, str) and len(shown) > 60:
        shown = shown[:57] + "...'"
    return RequestValidationFailure(
        f"Invalid value for '{loc}': {first['msg'].rstrip('.')} (got {shown}).", loc
    )


def validate_chat(data: dict[str, Any]) -> ChatCompletionRequest:
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as error:
        raise _explain(error) from None


def validate_completion(data: dict[str, Any]) -> CompletionRequest:
    try:
        return CompletionRequest.model_validate(data)
    except ValidationError as error:
        raise _explain(error) from None
