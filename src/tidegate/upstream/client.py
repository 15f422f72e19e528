"""POSTs to OpenAI-compatible upstreams, translating aiohttp's errors into tidegate's.

The client takes its ``aiohttp.ClientSession`` from the caller (the app's lifespan builds one
with a pooled connector; tests may pass their own), so the transport is injectable without
patching. Responses are returned open: the caller streams or reads them and must close them;
closing a response before its end closes the connection, which is how vLLM learns that the
client went away and aborts the request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import orjson

from tidegate.errors import UpstreamError, UpstreamTimeoutError

_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


class Target(Protocol):
    """Where a request goes (a routing ``Replica`` is one)."""

    @property
    def id(self) -> str: ...
    @property
    def base_url(self) -> str: ...
    @property
    def api_key(self) -> str | None: ...


class Provider(Protocol):
    """A wire protocol to backends. ``post`` returns the open response once it is 2xx; ``read``
    and ``iter_chunks`` give its body as OpenAI JSON and OpenAI SSE bytes (translated if the
    backend speaks another protocol). Errors are tidegate's ``UpstreamError``s."""

    async def post(
        self,
        replica: Target,
        path: str,
        body: bytes,
        *,
        request_id: str,
        extra_headers: dict[str, str] | None = None,
    ) -> aiohttp.ClientResponse: ...

    async def read(self, replica: Target, response: aiohttp.ClientResponse) -> bytes: ...

    def iter_chunks(
        self, replica: Target, response: aiohttp.ClientResponse
    ) -> AsyncIterator[bytes]: ...


@dataclass(frozen=True, slots=True)
class UpstreamTimeouts:
    connect_s: float = 5.0
    """TCP connect."""
    total_s: float = 600.0
    """The whole exchange, headers to last byte."""
    idle_s: float = 300.0
    """Longest silence between two reads."""


class UpstreamClient:
    def __init__(self, *, session: aiohttp.ClientSession, timeouts: UpstreamTimeouts) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(
            total=timeouts.total_s, sock_connect=timeouts.connect_s, sock_read=timeouts.idle_s
        )
        self._headers_by_key: dict[str | None, dict[str, str]] = {}

    def _headers(
        self, api_key: str | None, request_id: str, extra: dict[str, str] | None
    ) -> dict[str, str]:
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

    async def post(
        self,
        replica: Target,
        path: str,
        body: bytes,
        *,
        request_id: str,
        extra_headers: dict[str, str] | None = None,
    ) -> aiohttp.ClientResponse:
        """Send the request; return the open response once its status is 2xx.

        ``extra_headers``: per-request headers such as the W3C ``traceparent``.
        """
        url = replica.base_url + path
        try:
            response = await self._session.post(
                url,
                data=body,
                headers=self._headers(replica.api_key, request_id, extra_headers),
                timeout=self._timeout,
            )
        except TimeoutError:
            raise UpstreamTimeoutError(
                f"Replica '{replica.id}' did not answer in time. Retry, or raise "
                "server.request_timeout_s / server.idle_timeout_s if the model is slow."
            ) from None
        except aiohttp.ClientConnectionError as error:
            raise UpstreamError(
                f"Could not reach replica '{replica.id}' ({type(error).__name__}). It may be "
                "restarting; retry shortly.",
                kind="connect",
            ) from None
        if response.status >= 400:
            raise await _status_error(replica, response)
        return response

    async def read(self, replica: Target, response: aiohttp.ClientResponse) -> bytes:
        try:
            return await response.read()
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

    async def iter_chunks(
        self, replica: Target, response: aiohttp.ClientResponse
    ) -> AsyncIterator[bytes]:
        """Yield the body as it arrives, with errors translated."""
        content = response.content
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    return
                yield chunk
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


async def _status_error(replica: Target, response: aiohttp.ClientResponse) -> UpstreamError:
    """An upstream 4xx keeps its status and message (the client's error); 5xx becomes 502."""
    try:
        raw = await asyncio.wait_for(response.read(), timeout=5)
    except (TimeoutError, aiohttp.ClientError):
        raw = b""
    finally:
        response.release()
    message = _error_message(raw) or f"HTTP {response.status}"
    if 400 <= response.status < 500 and response.status not in (401, 403, 404, 408, 429):
        return UpstreamError(message, kind="status", status=400, code="upstream_rejected")
    return UpstreamError(
        f"Replica '{replica.id}' failed with HTTP {response.status}: {message}. Retry the "
        "request; if it keeps failing, check the replica's log (tidegate engine status).",
        kind="status",
    )


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
