"""A backend provider for the Anthropic Messages API that stands in for ``UpstreamClient``.

The gateway speaks OpenAI end to end, so this client translates at the edge: ``post`` rewrites
the OpenAI chat request into a Messages request (``tidegate.protocol.anthropic`` does the
rewriting, with no I/O), ``read`` returns an OpenAI ``chat.completion`` body and ``iter_chunks``
yields OpenAI ``chat.completion.chunk`` events ending in a usage chunk and ``[DONE]``, so the
relay and the meter need not know which kind of backend answered. Errors are translated here, as
``UpstreamClient`` does for OpenAI-compatible ones: a rejected request keeps its 400; a refused
key, a rate limit, an overload or a 5xx is the operator's problem and becomes a 502.

The API key comes only from the replica's configuration, is sent as ``x-api-key`` and is never
repeated in an error message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import orjson

from tidegate.errors import InvalidRequestError, UpstreamError, UpstreamTimeoutError
from tidegate.protocol.anthropic import (
    AnthropicProtocolError,
    chat_completion,
    error_details,
    messages_request,
)
from tidegate.protocol.anthropic_stream import ChunkTranslator
from tidegate.upstream.client import Target, UpstreamTimeouts

__all__ = ["AnthropicClient"]

_CHAT_PATH = "/chat/completions"
_OWN_HEADERS = frozenset(
    {"content-type", "accept", "x-request-id", "anthropic-version", "x-api-key", "authorization"}
)
_STATUS_ADVICE = {
    429: "The Anthropic API rate-limited the configured key; retry after a pause, or ask the "
    "operator to raise the key's Anthropic rate limit.",
    529: "The Anthropic API is overloaded; retry shortly.",
}


class AnthropicClient:
    """``post`` / ``read`` / ``iter_chunks`` like ``UpstreamClient``, against ``/v1/messages``.

    ``replica.base_url`` is the API root including ``/v1`` (``https://api.anthropic.com/v1``).
    """

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        timeouts: UpstreamTimeouts,
        anthropic_version: str = "2023-06-01",
    ) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(
            total=timeouts.total_s, sock_connect=timeouts.connect_s, sock_read=timeouts.idle_s
        )
        self._version = anthropic_version

    async def post(
        self,
        replica: Target,
        path: str,
        body: bytes,
        *,
        request_id: str,
        extra_headers: dict[str, str] | None = None,
    ) -> aiohttp.ClientResponse:
        """Translate and send an OpenAI chat request; return the open response once 2xx.

        ``extra_headers``: per-request headers such as the W3C ``traceparent``; they cannot
        replace the credentials.
        """
        if path != _CHAT_PATH:
            raise InvalidRequestError(
                "This model is served by an Anthropic backend, which only answers chat "
                "completions; use /v1/chat/completions.",
            )
        try:
            chat = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise InvalidRequestError("The request body is not valid JSON.") from None
        if not isinstance(chat, dict):
            raise InvalidRequestError("The request body must be a JSON object.")
        headers: dict[str, str] = {}
        if extra_headers:
            headers = {k: v for k, v in extra_headers.items() if k.lower() not in _OWN_HEADERS}
        headers["Content-Type"] = "application/json"
        headers["Accept"] = "application/json"
        headers["X-Request-Id"] = request_id
        headers["anthropic-version"] = self._version
        if replica.api_key:
            headers["x-api-key"] = replica.api_key
        try:
            response = await self._session.post(
                replica.base_url + "/messages",
                data=orjson.dumps(messages_request(chat)),
                headers=headers,
                timeout=self._timeout,
            )
        except TimeoutError:
            raise UpstreamTimeoutError(
                f"Replica '{replica.id}' (Anthropic) did not answer in time. Retry, or raise "
                "server.request_timeout_s / server.idle_timeout_s if the model is slow."
            ) from None
        except aiohttp.ClientConnectionError as error:
            raise UpstreamError(
                f"Could not reach replica '{replica.id}' (Anthropic, {type(error).__name__}). "
                "Retry shortly; if it persists, check the replica's url and the network.",
                kind="connect",
            ) from None
        if response.status >= 400:
            raise await _status_error(replica, response)
        return response

    async def read(self, replica: Target, response: aiohttp.ClientResponse) -> bytes:
        """The whole reply as an OpenAI ``chat.completion`` JSON body."""
        try:
            raw = await response.read()
        except TimeoutError:
            raise UpstreamTimeoutError(
                f"Replica '{replica.id}' stopped answering mid-response. Retry the request."
            ) from None
        except aiohttp.ClientError as error:
            raise UpstreamError(
                f"Replica '{replica.id}' dropped the connection mid-response "
                f"({type(error).__name__}). Retry the request.",
                kind="disconnect",
            ) from None
        try:
            return orjson.dumps(chat_completion(orjson.loads(raw), created=int(time.time())))
        except (orjson.JSONDecodeError, AnthropicProtocolError) as error:
            raise _protocol_error(replica, error) from None

    async def iter_chunks(
        self, replica: Target, response: aiohttp.ClientResponse
    ) -> AsyncIterator[bytes]:
        """Yield OpenAI SSE events as Anthropic's arrive, with errors translated.

        Stops after ``[DONE]`` or an in-band error event; a stream that ends before either is
        left for the relay to report as cut short.
        """
        translator = ChunkTranslator()
        content = response.content
        try:
            while not translator.finished:
                chunk = await content.readany()
                if not chunk:
                    return
                events = translator.feed(chunk)
                if events:
                    yield events
        except TimeoutError:
            raise UpstreamTimeoutError(
                f"Replica '{replica.id}' went silent mid-stream. Retry the request."
            ) from None
        except aiohttp.ClientError as error:
            raise UpstreamError(
                f"Replica '{replica.id}' dropped the connection mid-stream "
                f"({type(error).__name__}). Retry the request.",
                kind="disconnect",
            ) from None
        except AnthropicProtocolError as error:
            raise _protocol_error(replica, error) from None


def _protocol_error(replica: Target, error: Exception) -> UpstreamError:
    what = str(error) if isinstance(error, AnthropicProtocolError) else "a body that is not JSON"
    return UpstreamError(
        f"Replica '{replica.id}' (Anthropic) sent {what}. Retry the request; if it keeps "
        "failing, check that the replica's url points at the Anthropic API.",
        kind="protocol",
    )


async def _status_error(replica: Target, response: aiohttp.ClientResponse) -> UpstreamError:
    """A rejected request keeps Anthropic's 400 and message; the operator's problems are 502."""
    try:
        raw = await asyncio.wait_for(response.read(), timeout=5)
    except (TimeoutError, aiohttp.ClientError):
        raw = b""
    finally:
        response.release()
    status = response.status
    error_type, message = error_details(raw)
    if replica.api_key:  # Anthropic does not echo keys, but a proxy in between might
        message = message.replace(replica.api_key, "[redacted]")
    if status in (401, 403):
        return UpstreamError(
            f"Replica '{replica.id}' (Anthropic) refused tidegate's configured API key "
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
        f"Replica '{replica.id}' (Anthropic) failed with HTTP {status} {error_type}: "
        f"{message or 'no detail'}. {advice}",
        kind="status",
    )
