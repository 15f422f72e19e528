"""OpenTelemetry spans for the gateway's stages, exported over OTLP/HTTP when configured.

Nothing is global: the tracer provider belongs to the app. With no endpoint configured tracing is
off and every call here is a cheap no-op, so the hot path pays nothing for it. The W3C
``traceparent`` of the client is continued when present and always propagated to the engine
(vLLM accepts it and links its own spans when it has tracing on).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import NonRecordingSpan, Span, SpanKind, Tracer, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
_NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()


class Tracing:
    def __init__(
        self, *, service_name: str, otlp_endpoint: str = "", exporter: SpanExporter | None = None
    ) -> None:
        self._provider: TracerProvider | None = None
        self._tracer: Tracer | None = None
        if exporter is None and otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=otlp_endpoint)
        if exporter is not None:
            self._provider = TracerProvider(
                resource=Resource.create({"service.name": service_name})
            )
            self._provider.add_span_processor(BatchSpanProcessor(exporter))
            self._tracer = self._provider.get_tracer("tidegate")

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def start_request(self, name: str, headers: Mapping[str, str]) -> Span | None:
        """The request's root span, continuing the client's trace when it sent a traceparent."""
        if self._tracer is None:
            return None
        parent = _PROPAGATOR.extract(headers) if "traceparent" in headers else None
        return self._tracer.start_span(name, context=parent, kind=SpanKind.SERVER)

    def stage(
        self, parent: Span | None, name: str, **attributes: Any
    ) -> contextlib.AbstractContextManager[Span | None]:
        """A child span around one stage (auth, limits, validation, queue, upstream)."""
        if self._tracer is None or parent is None:
            return _NO_SPAN  # the common case: no generator, no allocation
        return self._stage(parent, name, attributes)

    @contextlib.contextmanager
    def _stage(self, parent: Span, name: str, attributes: dict[str, Any]) -> Iterator[Span | None]:
        assert self._tracer is not None
        span = self._tracer.start_span(
            name, context=set_span_in_context(parent), attributes=attributes or None
        )
        try:
            yield span
        except BaseException as error:
            span.record_exception(error)
            raise
        finally:
            span.end()

    @staticmethod
    def inject(span: Span | None, headers: dict[str, str]) -> None:
        """Add traceparent for ``span`` to outgoing headers."""
        if span is None or isinstance(span, NonRecordingSpan):
            return
        _PROPAGATOR.inject(headers, context=set_span_in_context(span, Context()))

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()
