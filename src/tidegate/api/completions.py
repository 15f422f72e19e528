"""POST /v1/chat/completions and /v1/completions as raw ASGI apps.

Raw ASGI keeps the hot path short and lets the route watch for the client going away: once the
body is read, a watcher task waits for ``http.disconnect`` and cancels the handler, which closes
the upstream connection (so the engine aborts the request) within milliseconds — streaming or
not. After the response has started, errors are sent in-band by the gateway's relay.
"""

from __future__ import annotations

import asyncio
import logging

from tidegate.api.asgi import (
    JSON_CONTENT_TYPE,
    SSE_HEADERS,
    Receive,
    Scope,
    Send,
    bearer_token,
    read_body,
    request_id,
    send_bytes,
)
from tidegate.api.errors import error_response, internal_error_response
from tidegate.api.services import ServicesSlot
from tidegate.errors import TidegateError
from tidegate.observability.metrics import Route
from tidegate.observability.records import RequestRecord

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


class CompletionEndpoint:
    def __init__(self, *, route: Route, services: ServicesSlot) -> None:
        self._route = route
        self._slot = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = request_id(scope)
        record = RequestRecord(request_id=rid, route=self._route)
        id_header = (b"x-request-id", rid.encode())
        state = _ResponseState()
        watcher: asyncio.Task[None] | None = None
        services = None
        in_flight = None
        try:
            services = self._slot.get()
            body = await read_body(scope, receive, services.max_body_bytes)
            principal = await services.keys.authenticate(bearer_token(scope))
            record.key_id = principal.key_id
            prepared = services.completions.prepare(self._route, body, record)
            in_flight = services.metrics.in_flight.labels(record.model)
            in_flight.inc()
            handler = asyncio.current_task()
            assert handler is not None
            watcher = asyncio.get_running_loop().create_task(
                _watch_disconnect(receive, state, handler)
            )
            if not prepared.stream:
                result = await services.completions.complete(prepared, record)
                state.started = state.finished = True
                await send_bytes(send, 200, result, [JSON_CONTENT_TYPE, id_header])
                return
            events = await services.completions.open_stream(prepared, record)
            state.started = True
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [*SSE_HEADERS, id_header],
                }
            )
            try:
                async for event in events:
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
            if not state.started:
                status, body, headers = error_response(error)
                await send_bytes(send, status, body, [JSON_CONTENT_TYPE, id_header, *headers])
        except Exception:
            log.exception("request %s failed inside the gateway", rid)
            record.outcome = "upstream"
            record.status = 500
            record.error_type = "internal_error"
            if not state.started:
                status, body, headers = internal_error_response(rid)
                await send_bytes(send, status, body, [JSON_CONTENT_TYPE, id_header, *headers])
        finally:
            state.finished = True
            if watcher is not None:
                watcher.cancel()
            if in_flight is not None:
                in_flight.dec()
            if services is not None:
                services.recorder.finish(record)
