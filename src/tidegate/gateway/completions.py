"""The completion routes' logic: parse, validate, admit, route, call the upstream, relay.

No HTTP framework here: ``api/completions.py`` hands in the raw body, the caller's principal and
a ``RequestRecord`` and turns the results (bytes, or an event stream) and the tidegate errors
into responses. Order matters: the prompt is counted (validation) before anything is reserved
(limits and budgets), and nothing refused here ever reaches an engine.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from opentelemetry.trace import Span

from tidegate.errors import InvalidRequestError, UpstreamError
from tidegate.gateway.keys import Principal
from tidegate.gateway.limits import Admission, Limiter
from tidegate.gateway.relay import StreamFailure, read_usage, relay_events
from tidegate.gateway.validation import RequestValidator
from tidegate.observability.metrics import GatewayMetrics, Route
from tidegate.observability.records import RequestRecord
from tidegate.observability.tracing import Tracing
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
    admission: Admission
    span: Span | None

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
        self,
        *,
        routing: RoutingTable,
        upstream: UpstreamClient,
        metrics: GatewayMetrics,
        validator: RequestValidator,
        limiter: Limiter,
        tracing: Tracing,
    ) -> None:
        self._routing = routing
        self._upstream = upstream
        self._metrics = metrics
        self._validator = validator
        self._limiter = limiter
        self._tracing = tracing

    async def admit(
        self,
        route: Route,
        body: bytes,
        principal: Principal,
        record: RequestRecord,
        span: Span | None,
    ) -> PreparedRequest:
        """Everything before the upstream: raises the error the client gets, if any."""
        data = parse_json_object(body)
        try:
            _VALIDATORS[route](data)
        except RequestValidationFailure as failure:
            raise InvalidRequestError(failure.message, param=failure.param) from None
        pool = self._routing.pool(data["model"])
        record.model = pool.model
        stream = bool(data.get("stream"))
        record.stream = stream
        tenant = principal.tenant
        with self._tracing.stage(span, "validation"):
            checked = await self._validator.check(route, data, tenant, principal.key, pool.model)
        prompt_tokens = checked.prompt_tokens or 0
        with self._tracing.stage(span, "limits"):
            admission = await self._limiter.admit(
                tenant_id=principal.tenant_id,
                key_id=principal.key_id,
                tenant_limits=tenant.limits,
                key_limits=principal.key.limits,
                budgets=tenant.budgets,
                model=pool.model,
                prompt_tokens=prompt_tokens,
                max_tokens=(checked.max_tokens or 0) * checked.sequences,
                failure_mode=tenant.on_limiter_unavailable,
            )
        # Only now: a refused request used nothing, so it is metered with no tokens.
        record.prompt_tokens = prompt_tokens  # the engine's usage replaces this estimate
        allowance = admission.completion_allowance
        if allowance is not None and not stream:
            # The budget covers only part of max_tokens: ask the engine for no more than that.
            field = "max_completion_tokens" if "max_completion_tokens" in data else "max_tokens"
            data[field] = max(1, allowance // max(1, checked.sequences))
        client_wants_usage = False
        if stream:
            options = data.get("stream_options") or {}
            client_wants_usage = bool(options.get("include_usage"))
            # Always ask for usage, so every stream can be metered.
            data["stream_options"] = {**options, "include_usage": True}
        if tenant.log_prompts:
            record.completion_text = []
        return PreparedRequest(route, pool, data, stream, client_wants_usage, admission, span)

    async def _open(
        self, request: PreparedRequest, record: RequestRecord
    ) -> tuple[Replica, aiohttp.ClientResponse]:
        tried: Replica | None = None
        for attempt in range(_CONNECT_ATTEMPTS):
            replica = request.pool.pick(avoid=tried)
            record.replica = replica.id
            replica.outstanding += 1
            try:
                with self._tracing.stage(request.span, "upstream", replica=replica.id) as span:
                    trace_headers: dict[str, str] = {}
                    self._tracing.inject(span, trace_headers)
                    response = await self._upstream.post(
                        replica,
                        _PATHS[request.route],
                        request.body_for(replica),
                        request_id=record.request_id,
                        extra_headers=trace_headers,
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
        _read_body_usage(body, record)
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
            completion_allowance=request.admission.completion_allowance,
        )
        try:
            async for event in events:
                yield event
        except StreamFailure as failure:  # the relay has set the outcome and sent the error
            if failure.kind is not None:
                self._metrics.upstream_errors.labels(record.model, failure.kind).inc()
        finally:
            with contextlib.suppress(BaseException):
                await events.aclose()
            # close() rather than release(): an unfinished upstream stream must be torn down so
            # the engine aborts the request instead of generating for nobody.
            response.close()
            replica.outstanding -= 1


def _read_body_usage(body: bytes, record: RequestRecord) -> None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    if not isinstance(data, dict):
        return
    usage = data.get("usage")
    if isinstance(usage, dict):
        read_usage(usage, record)
    if record.completion_text is not None:
        for choice in data.get("choices") or []:
            if isinstance(choice, dict):
                message = choice.get("message")
                text = message.get("content") if isinstance(message, dict) else choice.get("text")
                if isinstance(text, str):
                    record.completion_text.append(text)
