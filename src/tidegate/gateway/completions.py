"""The completion routes' logic: parse, validate, admit, route, call the upstream, relay.

No HTTP framework here: ``api/completions.py`` hands in the raw body, the caller's principal and
a ``RequestRecord`` and turns the results (bytes, or an event stream) and the tidegate errors
into responses. Order matters: the prompt is counted (validation) before anything is reserved
(limits and budgets), and nothing refused here ever reaches an engine.
"""

from __future__ import annotations

import contextlib
import time
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
from tidegate.scheduling import (
    ENGINE_PRIORITY,
    PriorityClass,
    Scheduler,
    Slot,
    parse_deadline_ms,
    resolve_class,
)
from tidegate.upstream.client import UpstreamClient

_PATHS: dict[Route, str] = {"chat": "/chat/completions", "completions": "/completions"}
_VALIDATORS: dict[Route, Callable[[dict[str, Any]], object]] = {
    "chat": validate_chat,
    "completions": validate_completion,
}
# A connect failure (a replica restarting) is retried once on another replica: nothing has
# reached the client yet, so the retry is invisible to it.
_CONNECT_ATTEMPTS = 2
# The scheduler's cost of a request whose max_tokens is unbounded (no default, no context known).
_UNBOUNDED_COMPLETION_COST = 1024


@dataclass(slots=True)
class PreparedRequest:
    route: Route
    pool: Pool
    payload: dict[str, Any]
    stream: bool
    client_wants_usage: bool
    admission: Admission
    span: Span | None
    klass: PriorityClass = "interactive"
    """The scheduling class."""
    tenant: str = ""
    """Whose fair share the request counts against (the tenant's name)."""
    cost: int = 1
    """Estimated tokens (prompt + max_tokens), for fair sharing."""
    deadline_s: float | None = None
    """How long after arrival the request may still wait for a slot (x-tidegate-deadline-ms)."""

    def body_for(self, replica: Replica) -> bytes:
        payload = self.payload
        if payload["model"] != replica.upstream_model:
            payload = {**payload, "model": replica.upstream_model}
        if replica.priority_scheduling:
            payload = {**payload, "priority": ENGINE_PRIORITY[self.klass]}
        return orjson.dumps(payload)


class _Exchange:
    """One upstream exchange's resources; ``end`` gives them all back, exactly once."""

    __slots__ = ("replica", "response", "slot", "_ended")

    def __init__(self, replica: Replica, response: aiohttp.ClientResponse, slot: Slot | None):
        self.replica = replica
        self.response = response
        self.slot = slot
        self._ended = False

    def end(self, *, reuse: bool = False) -> None:
        """``reuse``: the body was read whole, so the connection may serve another request."""
        if self._ended:
            return
        self._ended = True
        if reuse:
            self.response.release()
        else:
            # close() rather than release(): an unfinished upstream stream must be torn down so
            # the engine aborts the request instead of generating for nobody.
            self.response.close()
        self.replica.outstanding -= 1
        if self.slot is not None:
            self.slot.release()


class UpstreamStream:
    """The relayed events of one streamed exchange. ``aclose`` ends the exchange even when the
    events were never iterated (the client went before the response started)."""

    __slots__ = ("_events", "_exchange")

    def __init__(self, events: AsyncGenerator[bytes, None], exchange: _Exchange) -> None:
        self._events = events
        self._exchange = exchange

    def __aiter__(self) -> AsyncGenerator[bytes, None]:
        return self._events

    async def aclose(self) -> None:
        try:
            await self._events.aclose()
        finally:
            self._exchange.end()


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
        scheduler: Scheduler | None = None,
    ) -> None:
        """``scheduler``: per-pool admission and queueing; None sends every request straight to
        a replica."""
        self._scheduler = scheduler
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
        *,
        priority: str | None = None,
        deadline_ms: str | None = None,
    ) -> PreparedRequest:
        """Everything before the upstream: raises the error the client gets, if any.

        ``priority`` and ``deadline_ms``: the x-tidegate-priority and x-tidegate-deadline-ms
        request headers, as sent."""
        data = parse_json_object(body)
        klass = resolve_class(principal.tier, principal.key.priority, priority)
        deadline_s = parse_deadline_ms(deadline_ms)
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
        reserved = checked.reserved_tokens
        cost = reserved if reserved is not None else prompt_tokens + _UNBOUNDED_COMPLETION_COST
        return PreparedRequest(
            route,
            pool,
            data,
            stream,
            client_wants_usage,
            admission,
            span,
            klass=klass,
            tenant=principal.tenant_name,
            cost=cost,
            deadline_s=deadline_s,
        )

    async def _acquire(self, request: PreparedRequest, record: RequestRecord) -> Slot | None:
        scheduler = self._scheduler
        if scheduler is None:
            return None
        slot = scheduler.try_acquire(request.pool, request.klass)
        if slot is not None:
            return slot  # the fast path: no span, no future, no timer
        deadline_s = request.deadline_s
        if deadline_s is not None:
            deadline_s -= time.perf_counter() - record.started
        with self._tracing.stage(request.span, "queue"):
            return await scheduler.wait(
                request.pool,
                request.klass,
                tenant=request.tenant,
                cost=request.cost,
                deadline_s=deadline_s,
            )

    async def _open(self, request: PreparedRequest, record: RequestRecord) -> _Exchange:
        """Take a scheduler slot, then post to a replica; the slot is given back if that fails."""
        slot = await self._acquire(request, record)
        try:
            replica, response = await self._post(request, record)
        except BaseException:
            if slot is not None:
                slot.release()
            raise
        return _Exchange(replica, response, slot)

    async def _post(
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
        exchange = await self._open(request, record)
        try:
            body = await UpstreamClient.read(exchange.replica, exchange.response)
        except UpstreamError as error:
            self._metrics.upstream_errors.labels(record.model, error.kind).inc()
            raise
        finally:
            exchange.end(reuse=True)
        _read_body_usage(body, record)
        return body

    async def open_stream(self, request: PreparedRequest, record: RequestRecord) -> UpstreamStream:
        """Open the upstream stream (errors here are still plain error responses). The caller
        must ``aclose`` what it gets, whether it iterated it or not."""
        exchange = await self._open(request, record)
        return UpstreamStream(self._stream(exchange, request, record), exchange)

    async def _stream(
        self, exchange: _Exchange, request: PreparedRequest, record: RequestRecord
    ) -> AsyncGenerator[bytes, None]:
        events = relay_events(
            replica=exchange.replica,
            response=exchange.response,
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
            exchange.end()


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
