"""The completion routes' logic: parse, validate, route, call the upstream, account.

No HTTP framework here: ``api/completions.py`` hands in the raw body and a ``RequestRecord``
and turns the results (bytes, or an event stream) and the tidegate errors into responses.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from tidegate.errors import InvalidRequestError, UpstreamError
from tidegate.gateway.relay import StreamFailure, relay_events
from tidegate.observability.metrics import GatewayMetrics, Route
from tidegate.observability.records import RequestRecord
from tidegate.protocol.requests import (
    RequestValidationFailure,
    validate_chat,
    validate_completion,
)
from tidegate.routing.replicas import Pool, Replica, RoutingTable
from tidegate.upstream.client import UpstreamClient

_PATHS: dict[Route, str] = {"chat": "/chat/completions", "completions": "/completions"}
_VALIDATORS: dict[Route, Callable[[dict[str, Any]], object]] = {
    "chat": validate_chat,
    "completions": validate_completion,
}
# A connect failure (a replica restarting) is retried once on another replica: nothing has
# reached the client yet, so the retry is invisible to it.
_CONNECT_ATTEMPTS = 2


@dataclass(slots=True)
class PreparedRequest:
    route: Route
    pool: Pool
    payload: dict[str, Any]
    stream: bool
    client_wants_usage: bool

    def body_for(self, replica: Replica) -> bytes:
        payload = self.payload
        if payload["model"] != replica.upstream_model:
            payload = {**payload, "model": replica.upstream_model}
        return orjson.dumps(payload)


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidRequestError(
            f"The request body is not valid JSON ({error}). Send a JSON object with "
            "Content-Type: application/json."
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequestError(
            f"The request body must be a JSON object, not a JSON {type(data).__name__}."
        )
    return data


class CompletionService:
    def __init__(
        self, *, routing: RoutingTable, upstream: UpstreamClient, metrics: GatewayMetrics
    ) -> None:
        self._routing = routing
        self._upstream = upstream
        self._metrics = metrics

    def prepare(self, route: Route, body: bytes, record: RequestRecord) -> PreparedRequest:
        data = parse_json_object(body)
        try:
            _VALIDATORS[route](data)
        except RequestValidationFailure as failure:
            raise InvalidRequestError(failure.message, param=failure.param) from None
        pool = self._routing.pool(data["model"])
        record.model = pool.model
        stream = bool(data.get("stream"))
        record.stream = stream
        client_wants_usage = False
        if stream:
            options = data.get("stream_options") or {}
            client_wants_usage = bool(options.get("include_usage"))
            # Always ask for usage, so every stream can be metered.
            data["stream_options"] = {**options, "include_usage": True}
        return PreparedRequest(route, pool, data, stream, client_wants_usage)

    async def _open(
        self, request: PreparedRequest, record: RequestRecord
    ) -> tuple[Replica, aiohttp.ClientResponse]:
        tried: Replica | None = None
        for attempt in range(_CONNECT_ATTEMPTS):
            replica = request.pool.pick(avoid=tried)
            record.replica = replica.id
            replica.outstanding += 1
            try:
                response = await self._upstream.post(
                    replica,
                    _PATHS[request.route],
                    request.body_for(replica),
                    request_id=record.request_id,
                )
            except UpstreamError as error:
                replica.outstanding -= 1
                self._metrics.upstream_errors.labels(record.model, error.kind).inc()
                if error.kind != "connect" or attempt + 1 == _CONNECT_ATTEMPTS:
                    raise
                tried = replica
                continue
            except BaseException:
                replica.outstanding -= 1
                raise
            return replica, response
        raise AssertionError("unreachable")

    async def complete(self, request: PreparedRequest, record: RequestRecord) -> bytes:
        """A non-streaming exchange: the upstream's JSON body, as it sent it."""
        replica, response = await self._open(request, record)
        try:
            body = await UpstreamClient.read(replica, response)
        except UpstreamError as error:
            self._metrics.upstream_errors.labels(record.model, error.kind).inc()
            raise
        finally:
            response.release()
            replica.outstanding -= 1
        _read_usage(body, record)
        return body

    async def open_stream(
        self, request: PreparedRequest, record: RequestRecord
    ) -> AsyncGenerator[bytes, None]:
        """Open the upstream stream (errors here are still plain error responses)."""
        replica, response = await self._open(request, record)
        return self._stream(replica, response, request, record)

    async def _stream(
        self,
        replica: Replica,
        response: aiohttp.ClientResponse,
        request: PreparedRequest,
        record: RequestRecord,
    ) -> AsyncGenerator[bytes, None]:
        events = relay_events(
            replica=replica,
            response=response,
            record=record,
            client_wants_usage=request.client_wants_usage,
            itl=self._metrics.itl,
        )
        try:
            async for event in events:
                yield event
        except StreamFailure as failure:
            record.outcome = failure.error.outcome
            record.error_type = failure.error.error_type
            self._metrics.upstream_errors.labels(record.model, failure.error.kind).inc()
        finally:
            with contextlib.suppress(BaseException):
                await events.aclose()
            # close() rather than release(): an unfinished upstream stream must be torn down so
            # the engine aborts the request instead of generating for nobody.
            response.close()
            replica.outstanding -= 1


def _read_usage(body: bytes, record: RequestRecord) -> None:
    try:
        usage = orjson.loads(body).get("usage")
    except (orjson.JSONDecodeError, AttributeError):
        return
    if isinstance(usage, dict):
        record.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        record.completion_tokens = int(usage.get("completion_tokens") or 0)
