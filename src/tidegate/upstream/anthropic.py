"""The provider for the Anthropic Messages API.

The gateway speaks OpenAI end to end, so this provider translates at the edge, on objects:
the validated request's fields become a Messages request (``tidegate.protocol.anthropic``
does the rewriting, with no I/O) serialised once per request, a whole reply is parsed once and
rewritten into an OpenAI ``chat.completion`` (whose object the meter reads without parsing the
bytes again), and a stream is rewritten event by event into OpenAI ``chat.completion.chunk``
events ending in a usage chunk and ``[DONE]``, so the relay and the meter need not know which
kind of backend answered. A rejected request keeps its 400; a refused key, a rate limit, an
overload or a 5xx is the operator's problem and becomes a 502. Transport errors are translated
where every provider's are (``upstream.exchange``).

The API key comes only from the replica's configuration, is sent as ``x-api-key`` and is never
repeated in an error message.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from tidegate.errors import InvalidRequestError, UpstreamError
from tidegate.protocol.anthropic import chat_completion, error_details, messages_request
from tidegate.protocol.anthropic_stream import ChunkTranslator
from tidegate.protocol.requests import CompletionRequest
from tidegate.upstream.exchange import Completion, HttpProvider, Target, UpstreamTimeouts

__all__ = ["AnthropicClient"]

_OWN_HEADERS = frozenset(
    {"content-type", "accept", "x-request-id", "anthropic-version", "x-api-key", "authorization"}
)
_STATUS_ADVICE = {
    429: "The Anthropic API rate-limited the configured key; retry after a pause, or ask the "
    "operator to raise the key's Anthropic rate limit.",
    529: "The Anthropic API is overloaded; retry shortly.",
}


class AnthropicClient(HttpProvider):
    """The ``Provider`` for ``/v1/messages``; ``replica.base_url`` is the API root including
    ``/v1`` (``https://api.anthropic.com/v1``)."""

    label = " (Anthropic)"

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        timeouts: UpstreamTimeouts,
        anthropic_version: str = "2023-06-01",
    ) -> None:
        super().__init__(session=session, timeouts=timeouts)
        self._version = anthropic_version

    def path(self, request: CompletionRequest) -> str:
        if request.route != "chat":
            raise InvalidRequestError(
                "This model is served by an Anthropic backend, which only answers chat "
                "completions; use /v1/chat/completions.",
            )
        return "/messages"

    def encode(self, request: CompletionRequest, model: str, priority: int | None) -> bytes:
        # Anthropic has no engine priority: the shape is the model alone.
        return request.encode(("anthropic", model), lambda fields: _messages(fields, model))

    def headers(
        self, target: Target, request_id: str, extra: Mapping[str, str] | None
    ) -> dict[str, str]:
        """``extra`` (a ``traceparent``, say) cannot replace the credentials."""
        headers: dict[str, str] = {}
        if extra:
            headers = {k: v for k, v in extra.items() if k.lower() not in _OWN_HEADERS}
        headers["Content-Type"] = "application/json"
        headers["Accept"] = "application/json"
        headers["X-Request-Id"] = request_id
        headers["anthropic-version"] = self._version
        if target.api_key:
            headers["x-api-key"] = target.api_key
        return headers

    def decode(self, raw: bytes) -> Completion:
        reply = chat_completion(orjson.loads(raw), created=int(time.time()))
        return Completion(orjson.dumps(reply), reply)

    def stream_decoder(self) -> ChunkTranslator:
        return ChunkTranslator()

    def status_error(self, target: Target, status: int, raw: bytes) -> UpstreamError:
        """A rejected request keeps Anthropic's 400 and message; the operator's problems are 502."""
        error_type, message = error_details(raw)
        if target.api_key:  # Anthropic does not echo keys, but a proxy in between might
            message = message.replace(target.api_key, "[redacted]")
        if status in (401, 403):
            return UpstreamError(
                f"Replica '{target.id}' (Anthropic) refused tidegate's configured API key "
                f"(HTTP {status} {error_type}). An operator must fix the api_key configured for "
                "this replica.",
                kind="status",
            )
        if 400 <= status < 500 and status not in (404, 408, 429):
            return UpstreamError(
                message or f"HTTP {status}", kind="status", status=400, code="upstream_rejected"
            )
        advice = _STATUS_ADVICE.get(
            status,
            "Retry the request; if it keeps failing, check the replica's configuration "
            "(url, model) and the Anthropic status page.",
        )
        return UpstreamError(
            f"Replica '{target.id}' (Anthropic) failed with HTTP {status} {error_type}: "
            f"{message or 'no detail'}. {advice}",
            kind="status",
        )


def _messages(fields: Mapping[str, Any], model: str) -> dict[str, Any]:
    return messages_request({**fields, "model": model})
