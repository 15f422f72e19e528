"""The OpenAI-compatible provider (vLLM, SGLang, TGI, OpenAI itself): the request goes as the
client sent it, with the replica's model name and, for an engine that schedules by priority,
the request's priority; the answer comes back as it is.

The client takes its ``aiohttp.ClientSession`` from the caller (the app's lifespan builds one
with a pooled connector; tests may pass their own), so the transport is injectable without
patching. See ``upstream.exchange`` for what every provider shares.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from tidegate.errors import UpstreamError
from tidegate.protocol.endpoints import UPSTREAM_PATHS
from tidegate.protocol.requests import CompletionRequest
from tidegate.upstream.exchange import HttpProvider, Provider, Target, UpstreamTimeouts

__all__ = ["Provider", "Target", "UpstreamClient", "UpstreamTimeouts"]

_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


class UpstreamClient(HttpProvider):
    """The ``Provider`` for OpenAI-compatible backends."""

    def __init__(self, *, session: aiohttp.ClientSession, timeouts: UpstreamTimeouts) -> None:
        super().__init__(session=session, timeouts=timeouts)
        self._headers_by_key: dict[str | None, dict[str, str]] = {}

    def path(self, request: CompletionRequest) -> str:
        return UPSTREAM_PATHS[request.route]

    def encode(self, request: CompletionRequest, model: str, priority: int | None) -> bytes:
        if model == request.model and priority is None:
            return request.encode(None, _as_sent)  # the common case: the fields as they are
        return request.encode(
            ("openai", model, priority), lambda fields: _renamed(fields, model, priority)
        )

    def headers(
        self, target: Target, request_id: str, extra: Mapping[str, str] | None
    ) -> dict[str, str]:
        api_key = target.api_key
        base = self._headers_by_key.get(api_key)
        if base is None:
            base = dict(_JSON_HEADERS)
            if api_key:
                base["Authorization"] = f"Bearer {api_key}"
            self._headers_by_key[api_key] = base
        headers = {**base, "X-Request-Id": request_id}
        if extra:
            headers.update(extra)
        return headers

    def status_error(self, target: Target, status: int, raw: bytes) -> UpstreamError:
        """An upstream 4xx keeps its status and message (the client's error); 5xx becomes 502."""
        message = _error_message(raw) or f"HTTP {status}"
        if 400 <= status < 500 and status not in (401, 403, 404, 408, 429):
            return UpstreamError(message, kind="status", status=400, code="upstream_rejected")
        return UpstreamError(
            f"Replica '{target.id}' failed with HTTP {status}: {message}. Retry the "
            "request; if it keeps failing, check the replica's log (tidegate engine status).",
            kind="status",
        )


def _as_sent(fields: Mapping[str, Any]) -> Mapping[str, Any]:
    return fields


def _renamed(fields: Mapping[str, Any], model: str, priority: int | None) -> dict[str, Any]:
    body = {**fields, "model": model}
    if priority is not None:
        body["priority"] = priority
    return body


def _error_message(raw: bytes) -> str:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:200].decode("utf-8", "replace").strip()
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(data.get("message"), str):
            return str(data["message"])
    return raw[:200].decode("utf-8", "replace").strip()
