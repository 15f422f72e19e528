"""The completion routes' logic: parse, validate, admit, route, call the upstream, relay.

No HTTP framework here: ``api/completions.py`` hands in the raw body, the caller's principal and
a ``RequestRecord`` and turns the results (a ``Completion``, or an event stream) and the
tidegate errors into responses. Order matters: the prompt is counted (validation) before
anything is reserved (limits and budgets), and nothing refused here ever reaches an engine.

The body is parsed once, into the ``CompletionRequest`` that validation, the limits, routing
and the upstream exchange all read; every upstream call (retries and fallback included) goes
through the replica's ``Provider``, which serialises the request once and holds the replica's
in-flight lease for as long as the exchange is open.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import orjson
from opentelemetry.trace import Span

from tidegate.errors import (
    InvalidRequestError,
    NoReadyReplicaError,
    QueueFullError,
    UpstreamError,
)
from tidegate.observability.capture import ResponseCapture
from tidegate.observability.metrics import GatewayMetrics
from tidegate.observability.records import RequestRecord
from tidegate.observability.tracing import Tracing
from tidegate.pipeline.limits import Limiter
from tidegate.pipeline.prepared import PreparedRequest, RoutingHints, tenant_session
from tidegate.pipeline.relay import StreamFailure, read_usage, relay_events
from tidegate.pipeline.taps import RequestTap
from tidegate.pipeline.validation import RequestValidator
from tidegate.protocol.endpoints import Endpoint
from tidegate.protocol.json_body import parse_json_object
from tidegate.protocol.requests import (
    CompletionRequest,
    RequestValidationFailure,
    check_counts_raw,
)
from tidegate.routing.affinity import affinity_key
from tidegate.routing.cost import PoolEconomics, cheapest_first
from tidegate.routing.metrics import RoutingMetrics
from tidegate.routing.outlier import OutlierDetector
from tidegate.routing.replicas import Pool, Replica, RoutingTable
from tidegate.routing.retry_budget import RetryBudget
from tidegate.routing.rules import (
    FALLBACK,
    FIRST,
    SPILLOVER,
    SPLIT,
    RequestTraits,
    Route,
    response_format_type,
)
from tidegate.safety.gates import SafetyGates
from tidegate.scheduling import (
    ENGINE_PRIORITY,
    PriorityClass,
    Scheduler,
    Slot,
    parse_deadline_ms,
    resolve_class,
)
from tidegate.tenancy.keys import Principal
from tidegate.upstream.exchange import Completion, Provider, UpstreamResponse

__all__ = [
    "CompletionService",
    "PreparedRequest",
    "RoutingHints",
    "UpstreamStream",
    "tenant_session",
]

log = logging.getLogger(__name__)

# The scheduler's cost of a request whose max_tokens is unbounded (no default, no context known).
_UNBOUNDED_COMPLETION_COST = 1024


class _Call:
    """One pool's part of a request: the open upstream response and the scheduler's slot;
    ``end`` gives both back, exactly once."""

    __slots__ = ("response", "slot", "pool")

    def __init__(self, response: UpstreamResponse[Replica], slot: Slot | None, pool: Pool) -> None:
        self.response = response
        self.slot = slot
        self.pool = pool

    def end(self, *, reuse: bool = False) -> None:
        """``reuse``: the body was read whole, so the connection may serve another request."""
        self.response.close(reuse=reuse)
        slot, self.slot = self.slot, None
        if slot is not None:
            slot.release()


class UpstreamStream:
    """The relayed events of one streamed exchange. ``aclose`` ends the exchange even when the
    events were never iterated (the client went before the response started)."""

    __slots__ = ("_events", "_exchange")

    def __init__(self, events: AsyncGenerator[bytes, None], exchange: _Call) -> None:
        self._events = events
        self._exchange = exchange

    def __aiter__(self) -> AsyncGenerator[bytes, None]:
        return self._events

    async def aclose(self) -> None:
        try:
            await self._events.aclose()
        finally:
            self._exchange.end()


class CompletionService:
    def __init__(
        self,
        *,
        routing: RoutingTable,
        providers: dict[str, Provider],
        metrics: GatewayMetrics,
        routing_metrics: RoutingMetrics,
        validator: RequestValidator,
        limiter: Limiter,
        tracing: Tracing,
        outliers: OutlierDetector,
        retry_budget: RetryBudget,
        ttft_targets: dict[PriorityClass, float | None],
        scheduler: Scheduler | None = None,
        tap: RequestTap | None = None,
        safety: SafetyGates | None = None,
        economics: Mapping[str, PoolEconomics] | None = None,
    ) -> None:
        """``providers``: the transport per replica provider (openai, anthropic). ``scheduler``:
        per-pool admission and queueing; None sends every request straight to a replica.
        ``ttft_targets``: per class, the predicted queue wait above which a route with
        spillover moves on to its next pool. ``tap``: sees the requests for the models it
        watches (rollout statistics, shadow traffic). ``economics``: the priced pools, for
        routes that select the cheapest pool meeting the TTFT target."""
        self._economics: Mapping[str, PoolEconomics] = economics or {}
        self._scheduler = scheduler
        self._tap = tap
        self._safety = safety
        """The content-safety gates (``safety``): input checks before anything is spent."""
        self._routing = routing
        self._providers = providers
        self._metrics = metrics
        self._routing_metrics = routing_metrics
        self._validator = validator
        self._limiter = limiter
        self._tracing = tracing
        self._outliers = outliers
        self._retry_budget = retry_budget
        self._ttft_targets = ttft_targets
        self._uncapped_models: set[str] = set()
        """Models already warned about: no context length to cap a request without max_tokens."""

    def parse(self, route: Endpoint, body: bytes) -> CompletionRequest:
        """The body as the typed request, once: the count caps on a large body's bytes, then
        the parse, then the schema (each refusal the client's 400)."""
        caps = self._validator.body_caps
        try:
            check_counts_raw(route, body, caps)
            return CompletionRequest.checked(route, parse_json_object(body), caps)
        except RequestValidationFailure as failure:
            raise _invalid(failure) from None

    def request_of(self, route: Endpoint, fields: dict[str, Any]) -> CompletionRequest:
        """An already parsed JSON object (a batch line) as the typed request; the request owns
        ``fields`` from now on."""
        try:
            return CompletionRequest.checked(route, fields, self._validator.body_caps)
        except RequestValidationFailure as failure:
            raise _invalid(failure) from None

    async def admit(
        self,
        route: Endpoint,
        body: bytes | CompletionRequest,
        principal: Principal,
        record: RequestRecord,
        span: Span | None,
        hints: RoutingHints | None = None,
    ) -> PreparedRequest:
        """Everything before the upstream: raises the error the client gets, if any.
        ``body``: the raw bytes, or the request ``parse``/``request_of`` made of them."""
        request = self.parse(route, body) if isinstance(body, bytes) else body
        hints = hints or _NO_HINTS
        klass = resolve_class(principal.tier, principal.key.priority, hints.priority)
        deadline_s = parse_deadline_ms(hints.deadline_ms)
        model_route = self._routing.route(request.model)
        model = record.model = model_route.model
        stream = record.stream = request.stream
        tenant = principal.tenant
        if tenant.log_prompts:
            record.log_prompt = True
            record.prompt_retention_days = tenant.prompt_retention_days
            record.capture = ResponseCapture()
        gate = None if self._safety is None else self._safety.gate(model, tenant.safety_policy)
        if gate is not None:  # before the prompt is counted or anything reserved
            with self._tracing.stage(span, "safety"):
                await gate.check_input(request.fields, record)
        with self._tracing.stage(span, "validation"):
            checked = await self._validator.check(route, request, tenant, principal.key, model)
        # The prompt reserved is its count, or an upper bound on it where there is no tokenizer.
        prompt_tokens = checked.prompt_bound
        with self._tracing.stage(span, "limits"):
            admission = await self._limiter.admit(
                tenant_id=principal.tenant_id,
                key_id=principal.key_id,
                tenant_limits=tenant.limits,
                key_limits=principal.key.limits,
                budgets=tenant.budgets,
                model=model,
                prompt_tokens=prompt_tokens,
                # A request without its own limit reserves up to reservation_default, less
                # where a budget or token bucket has less left.
                max_tokens=None if checked.reservation_default else checked.max_tokens,
                sequences=checked.sequences,
                prompt_is_bound=checked.prompt_tokens is None,
                failure_mode=tenant.on_limiter_unavailable,
                default_max_tokens=checked.reservation_default,
            )
        # Only now: a refused request used nothing, so it is metered with no tokens.
        record.prompt_tokens = prompt_tokens  # the engine's usage replaces this estimate
        allowance = admission.completion_allowance
        # Equal to max_tokens: the engine stops there already (the client's or the tenant's
        # limit, or the context's room, vLLM's default), so the request goes as it came.
        if allowance is not None and allowance != checked.max_tokens:
            # What the reservation covers, per sequence, for streams and whole bodies alike:
            # the engine generates no more than the budget has left.
            _cap_completion(request, allowance, chat=route == "chat")
            if checked.max_tokens is None and model not in self._uncapped_models:
                self._uncapped_models.add(model)
                log.warning(
                    "model %s has no known context length (no context_length, and its engine's "
                    "/v1/models lists no max_model_len): requests without max_tokens from "
                    "tenants with budgets or token limits are sent with max_tokens of at most "
                    "validation.default_completion_reservation (%d here); set the upstream's "
                    "context_length or the tenant's default_max_tokens",
                    model,
                    allowance,
                )
        client_wants_usage = False
        if stream:
            options = request.get("stream_options") or {}
            client_wants_usage = bool(options.get("include_usage"))
            # Always ask for usage, so every stream can be metered.
            request.set("stream_options", {**options, "include_usage": True})
        reserved = checked.reserved_tokens
        cost = reserved if reserved is not None else prompt_tokens + _UNBOUNDED_COMPLETION_COST
        fields = request.fields
        traits = (
            RequestTraits(
                tier=principal.tier,
                prompt_tokens=checked.prompt_tokens,
                response_format=response_format_type(fields),
                quality=hints.quality,
            )
            if model_route.rules
            else None  # nothing to match: spare the allocation
        )
        session_id = tenant_session(principal.tenant_id, hints.session_id)
        split = model_route.split
        split_pool = record.split_pool = (
            None
            if split is None
            else split.pick(tenant=principal.tenant_name, session_id=session_id, payload=fields)
        )
        branch = model_route.branch(traits)
        chain = self._routing.chain(model_route, traits, split_pool=split_pool, names=branch.pools)
        pick = FIRST
        if split_pool is not None:
            pick = SPLIT
        elif branch.cheapest and len(chain) > 1:
            chain, pick = self._cheapest(
                chain, klass, model_route, checked.max_tokens, prompt_tokens
            )
        prepared = PreparedRequest(
            request,
            chain,
            client_wants_usage,
            admission,
            span,
            klass=klass,
            tenant=principal.tenant_name,
            cost=cost,
            deadline_s=deadline_s,
            spillover=model_route.spillover,
            session_id=session_id,
            safety=gate if gate is not None and gate.checks_output else None,
            branch=branch,
            pick=pick,
        )
        tap = self._tap
        if tap is not None and model in tap.watched:
            record.tapped = True
            tap.admitted(prepared, record)
        return prepared

    def _cheapest(
        self,
        chain: tuple[Pool, ...],
        klass: PriorityClass,
        route: Route,
        max_tokens: int | None,
        prompt_tokens: int,
    ) -> tuple[tuple[Pool, ...], int]:
        """``chain`` with the cheapest pool whose predicted TTFT meets the class's target
        first (select: cheapest), and how that pool was picked."""
        scheduler = self._scheduler
        now = time.monotonic()

        def wait_s(pool: Pool) -> float:
            if not pool.available(now):
                return math.inf
            return 0.0 if scheduler is None else scheduler.expected_wait_s(pool, klass)

        expected = route.expected_completion_tokens
        return cheapest_first(
            chain,
            self._economics,
            wait_s,
            target_s=self._ttft_targets.get(klass),
            prompt_tokens=prompt_tokens,
            completion_tokens=expected if max_tokens is None else min(max_tokens, expected),
        )

    async def _acquire(
        self, request: PreparedRequest, record: RequestRecord, pool: Pool, *, may_spill: bool
    ) -> Slot | None | _Spill:
        """A slot in ``pool`` (None without a scheduler), or ``SPILL`` when the request should
        rather go to the next pool of its chain than wait here past its TTFT target."""
        scheduler = self._scheduler
        if scheduler is None:
            return None
        slot = scheduler.try_acquire(pool, request.klass)
        if slot is not None:
            return slot  # the fast path: no span, no future, no timer
        if may_spill:
            target = self._ttft_targets.get(request.klass)
            if target is not None and scheduler.predicted_wait_s(pool, request.klass) > target:
                return SPILL
        deadline_s = request.deadline_s
        if deadline_s is not None:
            deadline_s -= time.perf_counter() - record.started
        with self._tracing.stage(request.span, "queue"):
            return await scheduler.wait(
                pool,
                request.klass,
                tenant=request.tenant,
                cost=request.cost,
                deadline_s=deadline_s,
            )

    async def _open(self, request: PreparedRequest, record: RequestRecord) -> _Call:
        """Walk the request's pool chain: take a slot in a pool, then post to one of its
        replicas. A pool is passed over, for the next one, when it has no healthy replica, its
        breaker is open, its queue is full, its predicted wait breaks the TTFT target (routes
        with spillover), or it failed before the first byte (within the retry budget). The
        last pool's error is the client's."""
        chain = request.chain
        last = len(chain) - 1
        passed = FALLBACK  # why the pools before the one that serves were passed over
        self._retry_budget.on_request()
        for index, pool in enumerate(chain):
            final = index == last
            if not final and not pool.available(time.monotonic()):
                self._routing_metrics.fallback(pool.name, "unavailable")
                continue
            try:
                slot = await self._acquire(
                    request, record, pool, may_spill=request.spillover and not final
                )
            except (QueueFullError, NoReadyReplicaError):
                if final:
                    raise
                self._routing_metrics.fallback(pool.name, "overloaded")
                continue
            if slot is SPILL:
                self._routing_metrics.fallback(pool.name, "spillover")
                passed = SPILLOVER
                continue
            assert not isinstance(slot, _Spill)
            try:
                response = await self._post(request, record, pool)
            except NoReadyReplicaError:
                # Its breaker is half-open with the probe out, or its last candidate was just
                # ejected: like an unavailable pool, the next one of the chain takes it.
                if slot is not None:
                    slot.release()
                if final:
                    raise
                self._routing_metrics.fallback(pool.name, "unavailable")
                continue
            except UpstreamError as error:
                if slot is not None:
                    slot.release()
                if final or not _retryable(error) or not self._may_retry(error):
                    raise
                self._routing_metrics.fallback(pool.name, "error")
                continue
            except BaseException:
                if slot is not None:
                    slot.release()
                raise
            request.backend = pool.backend_of(response.target)
            record.pool = pool.name
            branch = request.branch
            if branch is not None:
                pick = request.pick if index == 0 else passed
                record.route_reason = branch.reasons[pick]
                request.reason = branch.headers[pick]
            return _Call(response, slot, pool)
        raise AssertionError("unreachable: the last pool either returns or raises")

    async def _post(
        self, request: PreparedRequest, record: RequestRecord, pool: Pool
    ) -> UpstreamResponse[Replica]:
        """Post to one of the pool's replicas; a failure before the first byte is retried once
        on another replica of the pool, within the retry budget. The exchange holds the
        replica's in-flight lease; the body is serialised once for all the attempts."""
        breaker = pool.breaker
        if breaker is not None and not breaker.allow():
            raise _circuit_open(pool)
        body = request.request
        key = (
            affinity_key(
                body.fields,
                session_id=request.session_id,
                prefix_chars=pool.affinity_prefix_chars,
            )
            if pool.affinity_prefix_chars
            else None
        )
        tried: Replica | None = None
        while True:
            replica = pool.pick(avoid=tried, affinity=key)
            record.replica = replica.id
            try:
                with self._tracing.stage(request.span, "upstream", replica=replica.id) as span:
                    trace_headers: dict[str, str] = {}
                    self._tracing.inject(span, trace_headers)
                    response = await self._providers[replica.provider].open(
                        replica,
                        body,
                        model=pool.upstream_model or replica.upstream_model,
                        priority=ENGINE_PRIORITY[request.klass]
                        if replica.priority_scheduling
                        else None,
                        request_id=record.request_id,
                        extra_headers=trace_headers,
                    )
            except UpstreamError as error:
                self._metrics.upstream_errors.labels(record.model, error.kind).inc()
                if not _is_failure(error):
                    raise  # the upstream refused the request itself: the client's error
                self._failed(pool, replica, decisive=error.kind == "connect")
                if (
                    tried is not None
                    or not _retryable(error)
                    or all(r is replica for r in pool.candidates())
                    or not self._may_retry(error)
                ):
                    raise
                self._routing_metrics.retry(pool.name)
                tried = replica
                continue
            if replica.consecutive_failures or replica.ejections:
                OutlierDetector.record_success(replica)
            if breaker is not None:
                breaker.record_success()
            return response

    def _may_retry(self, error: UpstreamError) -> bool:
        """A refused connection reached no server, so sending the request elsewhere adds no
        upstream load and is free; any other retry spends from the retry budget."""
        return error.kind == "connect" or self._retry_budget.try_retry()

    def _failed(self, pool: Pool, replica: Replica, *, decisive: bool) -> None:
        """Count a replica's failure towards outlier ejection and the pool's breaker."""
        self._outliers.record_failure(pool.name, pool.replicas, replica, decisive=decisive)
        if pool.breaker is not None:
            pool.breaker.record_failure()

    async def complete(self, request: PreparedRequest, record: RequestRecord) -> Completion:
        """A non-streaming exchange: the upstream's answer (OpenAI format)."""
        call = await self._open(request, record)
        try:
            completion = await call.response.read()
        except UpstreamError as error:
            self._metrics.upstream_errors.labels(record.model, error.kind).inc()
            self._failed(call.pool, call.response.target, decisive=False)
            raise
        finally:
            call.end(reuse=True)  # read() has closed the response already, as it should
        _read_body_usage(completion.json(), record)
        if request.safety is not None:
            filtered = await request.safety.check_answer(completion.json(), record)
            if filtered is not None:
                completion = Completion(orjson.dumps(filtered), filtered)
        return completion

    async def open_stream(self, request: PreparedRequest, record: RequestRecord) -> UpstreamStream:
        """Open the upstream stream (errors here are still plain error responses). The caller
        must ``aclose`` what it gets, whether it iterated it or not."""
        call = await self._open(request, record)
        return UpstreamStream(self._stream(call, request, record), call)

    async def _stream(
        self, call: _Call, request: PreparedRequest, record: RequestRecord
    ) -> AsyncGenerator[bytes, None]:
        replica = call.response.target
        events = relay_events(
            replica=replica,
            chunks=call.response.chunks(),
            record=record,
            client_wants_usage=request.client_wants_usage,
            itl=self._metrics.itl,
            completion_limit=request.admission.completion_limit,
        )
        if request.safety is not None:
            events = request.safety.guard_stream(events, record)
        try:
            async for event in events:
                yield event
        except StreamFailure as failure:  # the relay has set the outcome and sent the error
            if failure.kind is not None:
                self._metrics.upstream_errors.labels(record.model, failure.kind).inc()
                self._failed(call.pool, replica, decisive=False)
        finally:
            with contextlib.suppress(BaseException):
                await events.aclose()
            call.end()


class _Spill:
    """The request should go to the next pool of its chain (see ``_acquire``)."""


SPILL = _Spill()
_NO_HINTS = RoutingHints()


def _is_failure(error: UpstreamError) -> bool:
    """A replica failure (counts towards ejection), not the upstream refusing the request."""
    return error.status >= 500


def _retryable(error: UpstreamError) -> bool:
    """Safe and useful to send again elsewhere: a refused connection or a 5xx status. Not a
    timeout: the request may still be running there, and a second one doubles the load."""
    return error.kind in ("connect", "status") and error.status >= 500


def _circuit_open(pool: Pool) -> NoReadyReplicaError:
    return NoReadyReplicaError(
        f"Pool '{pool.name}' is failing and its circuit breaker is open. Retry after the "
        "Retry-After interval.",
        retry_after_s=5.0,
    )


def _invalid(failure: RequestValidationFailure) -> InvalidRequestError:
    return InvalidRequestError(failure.message, param=failure.param, code=failure.code)


def _cap_completion(request: CompletionRequest, allowance: int, *, chat: bool) -> None:
    """Write ``allowance`` as the request's completion limit. On the chat route vLLM and the
    Anthropic translation read max_completion_tokens before max_tokens, older servers only
    max_tokens, so every field the client set is lowered and an absent limit is added."""
    fields = ("max_completion_tokens", "max_tokens") if chat else ("max_tokens",)
    present = [name for name in fields if request.get(name) is not None]
    for name in present or fields[:1]:
        value = request.get(name)
        request.set(name, allowance if not isinstance(value, int) else min(value, allowance))


def _read_body_usage(data: Any, record: RequestRecord) -> None:
    if not isinstance(data, dict):
        return
    usage = data.get("usage")
    if isinstance(usage, dict):
        read_usage(usage, record)
    capture = record.capture
    if capture is not None:
        choices = data.get("choices")
        if isinstance(choices, list):
            capture.add_body_choices(choices)
