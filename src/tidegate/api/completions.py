"""POST /v1/chat/completions and /v1/completions as raw ASGI apps.

Raw ASGI keeps the hot path short and lets the route watch for the client going away: once the
body is read, a watcher task waits for ``http.disconnect`` and cancels the handler, which closes
the upstream connection (so the engine aborts the request) within milliseconds — streaming or
not. After the response has started, errors are sent in-band by the gateway's relay. Whatever
happens, the request is accounted exactly once (settled, metered, logged) in ``finally``.
"""

from __future__ import annotations

import asyncio
import logging

from opentelemetry.trace import Span

from tidegate.api.asgi import (
    JSON_CONTENT_TYPE,
    SSE_HEADERS,
    Headers,
    Receive,
    RequestIds,
    Scope,
    Send,
    bearer_token,
    client_request_id,
    read_body,
    request_id_headers,
    send_bytes,
)
from tidegate.api.errors import error_response, internal_error_response
from tidegate.api.services import ApiServices, ServicesSlot
from tidegate.errors import TidegateError
from tidegate.observability.records import RequestRecord
from tidegate.pipeline.accounting import rejection_reason
from tidegate.pipeline.completions import PreparedRequest, RoutingHints
from tidegate.protocol.endpoints import Endpoint
from tidegate.protocol.sse import DONE_EVENT
from tidegate.scheduling.classes import DEADLINE_HEADER, PRIORITY_HEADER

QUALITY_HEADER = b"x-tidegate-quality"
"""A quality hint routing rules can match (routing.routes[].rules[].quality)."""
SESSION_HEADER = b"x-tidegate-session-id"
"""An explicit affinity key: requests with the same one go to the same replica."""
BACKEND_HEADER = b"x-tidegate-backend"
"""On every answer: the pool and replica that served it, POOL/REPLICA."""
REASON_HEADER = b"x-tidegate-route-reason"
"""On every answer: why that pool served it (``routing.rules``: default, rule:<i>,
time_window:<i>, then /cheapest, /fallback, /spillover ... when not the chain's first)."""

log = logging.getLogger(__name__)


class _ResponseState:
    __slots__ = ("started", "finished", "client_gone")

    def __init__(self) -> None:
        self.started = False
        self.finished = False
        self.client_gone = False


async def _watch_disconnect(
    receive: Receive, state: _ResponseState, handler: asyncio.Task[None]
) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if not state.finished:
                state.client_gone = True
                handler.cancel()
            return


_HINT_FIELDS = {
    PRIORITY_HEADER: "priority",
    DEADLINE_HEADER: "deadline_ms",
    QUALITY_HEADER: "quality",
    SESSION_HEADER: "session_id",
}


def _read_headers(scope: Scope) -> tuple[dict[str, str], RoutingHints | None]:
    """One pass over the request headers: the trace context, and the x-tidegate-* routing
    hints (None when none was sent)."""
    trace: dict[str, str] = {}
    hints: RoutingHints | None = None
    for key, value in scope["headers"]:
        if key == b"traceparent":
            trace = {"traceparent": value.decode("latin-1")}
        elif key.startswith(b"x-tidegate-"):
            name = _HINT_FIELDS.get(key)
            if name is not None:
                if hints is None:
                    hints = RoutingHints()
                setattr(hints, name, value.decode("latin-1"))
    return trace, hints


class CompletionEndpoint:
    def __init__(self, *, route: Endpoint, services: ServicesSlot, ids: RequestIds) -> None:
        self._route = route
        self._slot = services
        self._ids = ids
        self._span_name = "POST /v1/chat/completions" if route == "chat" else "POST /v1/completions"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = self._ids.next()
        client_id = client_request_id(scope)
        record = RequestRecord(request_id=rid, route=self._route, client_request_id=client_id)
        headers: Headers = request_id_headers(rid, client_id)
        state = _ResponseState()
        watcher: asyncio.Task[None] | None = None
        services: ApiServices | None = None
        prepared: PreparedRequest | None = None
        retention_days = 0
        metered = False
        in_flight = None
        span: Span | None = None
        try:
            services = self._slot.get()
            trace, hints = _read_headers(scope)
            span = services.tracing.start_request(self._span_name, trace)
            body = await read_body(scope, receive, services.max_body_bytes)
            with services.tracing.stage(span, "auth"):
                principal = await services.keys.authenticate(bearer_token(scope))
            # Before the tenant is set: a refusal for a full usage backlog adds no record to it.
            services.accounting.check_backlog()
            record.key_id = principal.key_id
            record.tenant_id = principal.tenant_id
            record.tenant = principal.tenant_name
            retention_days = principal.tenant.prompt_retention_days
            prepared = await services.completions.admit(
                self._route, body, principal, record, span, hints
            )
            headers += prepared.admission.headers
            in_flight = services.metrics.in_flight_for(record.model)
            in_flight.inc()
            handler = asyncio.current_task()
            assert handler is not None
            watcher = asyncio.get_running_loop().create_task(
                _watch_disconnect(receive, state, handler)
            )
            if not prepared.stream:
                result = await services.completions.complete(prepared, record)
                state.started = state.finished = True
                # Metered before the client can hold the whole answer, so a crash after this
                # send never loses the record of a request the client got.
                services.accounting.meter(
                    record, payload=prepared.payload, retention_days=retention_days
                )
                metered = True
                headers.append((BACKEND_HEADER, prepared.backend))
                headers.append((REASON_HEADER, prepared.reason))
                await send_bytes(send, 200, result.body, [JSON_CONTENT_TYPE, *headers])
                return
            events = await services.completions.open_stream(prepared, record)
            headers.append((BACKEND_HEADER, prepared.backend))
            headers.append((REASON_HEADER, prepared.reason))
            try:
                state.started = True
                await send(
                    {"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + headers}
                )
                async for event in events:
                    if event is DONE_EVENT:
                        # The client holds the whole answer once it has [DONE]: meter first.
                        services.accounting.meter(
                            record, payload=prepared.payload, retention_days=retention_days
                        )
                        metered = True
                    await send({"type": "http.response.body", "body": event, "more_body": True})
            finally:
                await events.aclose()
            state.finished = True
            await send({"type": "http.response.body", "body": b""})
        except asyncio.CancelledError:
            if not state.client_gone:
                raise  # the server is shutting down: let it
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            record.outcome = "client_closed"
            record.status = 499
        except ConnectionAbortedError:
            record.outcome = "client_closed"
            record.status = 499
        except TidegateError as error:
            record.outcome = error.outcome
            record.status = error.status
            record.error_type = error.error_type
            record.rejection = rejection_reason(error)
            if not state.started:
                status, body, extra = error_response(error)
                await send_bytes(send, status, body, [JSON_CONTENT_TYPE, *headers, *extra])
        except Exception:
            log.exception("request %s (client id %s) failed inside the gateway", rid, client_id)
            record.outcome = "upstream"
            record.status = 500
            record.error_type = "internal_error"
            if not state.started:
                status, body, extra = internal_error_response(rid)
                await send_bytes(send, status, body, [JSON_CONTENT_TYPE, *headers, *extra])
        finally:
            state.finished = True
            if watcher is not None:
                watcher.cancel()
            if in_flight is not None:
                in_flight.dec()
            if services is not None:
                await services.accounting.finish(
                    record,
                    admission=prepared.admission if prepared is not None else None,
                    payload=prepared.payload if prepared is not None else None,
                    retention_days=retention_days,
                    metered=metered,
                )
            if span is not None:
                span.set_attribute("tidegate.outcome", record.outcome)
                span.set_attribute("http.response.status_code", record.status)
                span.end()
