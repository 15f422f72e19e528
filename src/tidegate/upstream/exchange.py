"""One upstream exchange: a validated request to one replica, and its answer, in tidegate's types.

Every call to a backend goes through a ``Provider`` (the primary with its retries and fallback,
shadow calls, batch lines). ``Provider.open`` serialises the request for the provider's wire
shape (once per request: ``CompletionRequest.encode`` caches it across attempts), takes the
replica's in-flight lease, posts, and hands back an ``UpstreamResponse`` holding the lease until
it is closed. Its ``read`` gives a ``Completion`` (OpenAI JSON), its ``chunks`` OpenAI SSE bytes,
translated where the backend speaks another protocol, so nothing above ``upstream/`` sees
aiohttp. Transport failures (timeouts, refused or reset connections, malformed replies) become
tidegate's ``UpstreamError``s in one place, ``transport_error``; a provider only says what its
error statuses mean.

Responses are open until closed: closing one before its end closes the connection, which is how
vLLM learns that the client went away and aborts the request.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

import aiohttp
import orjson

from tidegate.errors import UpstreamError, UpstreamTimeoutError
from tidegate.protocol.requests import CompletionRequest

__all__ = [
    "Completion",
    "HttpProvider",
    "Lease",
    "Provider",
    "StreamDecoder",
    "Target",
    "UpstreamResponse",
    "UpstreamTimeouts",
    "transport_error",
]

Phase = Literal["connect", "body", "stream"]
"""Where an exchange failed: before the status line, reading a whole body, or mid-stream."""


class Lease(Protocol):
    """A request counted in flight on a replica until ``release`` (idempotent)."""

    def release(self) -> None: ...


class Target(Protocol):
    """Where a request goes (a routing ``Replica`` is one)."""

    @property
    def id(self) -> str: ...
    @property
    def base_url(self) -> str: ...
    @property
    def api_key(self) -> str | None: ...
    def lease(self) -> Lease: ...


@dataclass(frozen=True, slots=True)
class UpstreamTimeouts:
    connect_s: float = 5.0
    """TCP connect."""
    total_s: float = 600.0
    """The whole exchange, headers to last byte."""
    idle_s: float = 300.0
    """Longest silence between two reads."""


class Completion:
    """A whole answer: the OpenAI ``chat.completion``/``text_completion`` body to send, and
    the parsed object when the provider already built it (``json`` parses it otherwise)."""

    __slots__ = ("body", "_data")

    def __init__(self, body: bytes, data: Any = None) -> None:
        self.body = body
        self._data = data

    def json(self) -> Any:
        """The body as parsed JSON (``None`` when it is not JSON: the client gets it as sent)."""
        if self._data is None:
            try:
                self._data = orjson.loads(self.body)
            except orjson.JSONDecodeError:
                return None
        return self._data


class StreamDecoder(Protocol):
    """Turns a backend's stream bytes into OpenAI SSE bytes; raises ``ValueError`` for a
    malformed stream. ``finished`` ends the read (after ``[DONE]`` or an in-band error)."""

    finished: bool

    def feed(self, data: bytes) -> bytes: ...


def transport_error(
    target: Target, label: str, phase: Phase, error: BaseException
) -> UpstreamError:
    """The one translation of a transport failure into the error the client gets.

    ``label``: how the provider is named in messages (``""`` or ``" (Anthropic)"``).
    """
    who = f"Replica '{target.id}'{label}"
    if isinstance(error, TimeoutError):
        if phase == "connect":
            return UpstreamTimeoutError(
                f"{who} did not answer in time. Retry, or raise server.request_timeout_s / "
                "server.idle_timeout_s if the model is slow."
            )
        where = "stopped answering mid-response" if phase == "body" else "went silent mid-stream"
        return UpstreamTimeoutError(f"{who} {where}. Retry the request.")
    name = type(error).__name__
    if isinstance(error, aiohttp.ClientError):
        if phase == "connect":
            return UpstreamError(
                f"Could not reach replica '{target.id}'{label} ({name}). It may be restarting; "
                "retry shortly. If it persists, check the replica's url and the network.",
                kind="connect",
            )
        where = "mid-response" if phase == "body" else "mid-stream"
        return UpstreamError(
            f"{who} dropped the connection {where} ({name}). Retry the request.",
            kind="disconnect",
        )
    what = "a body that is not JSON" if isinstance(error, orjson.JSONDecodeError) else str(error)
    return UpstreamError(
        f"{who} sent {what}. Retry the request; if it keeps failing, check that the replica's "
        "url points at the API its provider names.",
        kind="protocol",
    )


_TRANSPORT_ERRORS = (TimeoutError, aiohttp.ClientError)
_DECODE_ERRORS = (TimeoutError, aiohttp.ClientError, ValueError)


T = TypeVar("T", bound=Target)


class UpstreamResponse(Generic[T]):
    """An answer whose status was 2xx, open until ``close`` (or the end of ``read``); it holds
    the replica's in-flight lease until then."""

    __slots__ = ("target", "_response", "_lease", "_provider", "_closed")

    def __init__(
        self,
        target: T,
        response: aiohttp.ClientResponse,
        lease: Lease,
        provider: HttpProvider,
    ) -> None:
        self.target = target
        self._response = response
        self._lease = lease
        self._provider = provider
        self._closed = False

    async def read(self) -> Completion:
        """The whole answer as OpenAI JSON; the response is closed afterwards either way."""
        provider = self._provider
        finished = False
        try:
            try:
                raw = await self._response.read()
                completion = provider.decode(raw)
            except _DECODE_ERRORS as error:
                raise transport_error(self.target, provider.label, "body", error) from None
            finished = True
            return completion
        finally:
            self.close(reuse=finished)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The answer's OpenAI SSE bytes as they arrive, errors translated. Ends at the end of
        the body, or where the decoder says the stream is over."""
        provider = self._provider
        content = self._response.content
        decoder = provider.stream_decoder()
        try:
            if decoder is None:
                while chunk := await content.readany():
                    yield chunk
                return
            while not decoder.finished:
                chunk = await content.readany()
                if not chunk:
                    return
                events = decoder.feed(chunk)
                if events:
                    yield events
        except _DECODE_ERRORS as error:
            raise transport_error(self.target, provider.label, "stream", error) from None

    def close(self, *, reuse: bool = False) -> None:
        """``reuse``: the body was read whole, so the connection may serve another request;
        otherwise it is torn down, so the engine aborts what it was generating for nobody."""
        if self._closed:
            return
        self._closed = True
        if reuse:
            self._response.release()
        else:
            self._response.close()
        self._lease.release()


class Provider(Protocol):
    """A wire protocol to backends (OpenAI-compatible, Anthropic Messages)."""

    async def open(
        self,
        target: T,
        request: CompletionRequest,
        *,
        model: str,
        priority: int | None = None,
        request_id: str,
        extra_headers: Mapping[str, str] | None = None,
    ) -> UpstreamResponse[T]:
        """Send ``request`` to ``target`` as ``model`` (its upstream name), with the engine
        ``priority`` where it schedules by priority; the open response once its status is 2xx.
        ``extra_headers``: per-request headers such as the W3C ``traceparent``."""
        ...


class HttpProvider(ABC):
    """What every provider shares: the session, the timeouts, the lease and the transport's
    error handling. Subclasses say where the request goes, how it is encoded and decoded, and
    what an error status means."""

    label = ""
    """How the provider is named in error messages."""

    def __init__(self, *, session: aiohttp.ClientSession, timeouts: UpstreamTimeouts) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(
            total=timeouts.total_s, sock_connect=timeouts.connect_s, sock_read=timeouts.idle_s
        )

    async def open(
        self,
        target: T,
        request: CompletionRequest,
        *,
        model: str,
        priority: int | None = None,
        request_id: str,
        extra_headers: Mapping[str, str] | None = None,
    ) -> UpstreamResponse[T]:
        url = target.base_url + self.path(request)
        body = self.encode(request, model, priority)
        headers = self.headers(target, request_id, extra_headers)
        lease = target.lease()
        try:
            try:
                response = await self._session.post(
                    url, data=body, headers=headers, timeout=self._timeout
                )
            except _TRANSPORT_ERRORS as error:
                raise transport_error(target, self.label, "connect", error) from None
            if response.status >= 400:
                raise await self._status_error(target, response)
        except BaseException:
            lease.release()
            raise
        return UpstreamResponse(target, response, lease, self)

    async def _status_error(
        self, target: Target, response: aiohttp.ClientResponse
    ) -> UpstreamError:
        try:
            raw = await asyncio.wait_for(response.read(), timeout=5)
        except _TRANSPORT_ERRORS:
            raw = b""
        finally:
            response.release()
        return self.status_error(target, response.status, raw)

    # -- what a provider defines ------------------------------------------------------------

    @abstractmethod
    def path(self, request: CompletionRequest) -> str:
        """Where the request goes under the replica's base URL (or why it cannot go)."""

    @abstractmethod
    def encode(self, request: CompletionRequest, model: str, priority: int | None) -> bytes:
        """The body on the wire, through ``request.encode`` so it is built once per shape."""

    @abstractmethod
    def headers(
        self, target: Target, request_id: str, extra: Mapping[str, str] | None
    ) -> dict[str, str]: ...

    @abstractmethod
    def status_error(self, target: Target, status: int, raw: bytes) -> UpstreamError:
        """What an error status (and its body, ``raw``) means to the client."""

    def decode(self, raw: bytes) -> Completion:
        """A whole 2xx body as an OpenAI completion; ``ValueError`` when it is malformed."""
        return Completion(raw)

    def stream_decoder(self) -> StreamDecoder | None:
        """None: the backend's stream is OpenAI SSE already and passes as it came."""
        return None
