from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tidegate.observability.tracing import Tracing

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_PARENT = "b7ad6b7169203331"


def test_disabled_tracing_is_a_no_op() -> None:
    tracing = Tracing(service_name="t")
    assert not tracing.enabled
    root = tracing.start_request("req", {})
    assert root is None
    with tracing.stage(root, "auth") as span:
        assert span is None
    headers: dict[str, str] = {}
    tracing.inject(root, headers)
    assert headers == {}


def test_stages_are_children_of_the_request_span_which_continues_the_client_trace() -> None:
    exporter = InMemorySpanExporter()
    tracing = Tracing(service_name="tidegate-test", exporter=exporter)
    root = tracing.start_request(
        "POST /v1/chat/completions", {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"}
    )
    assert root is not None
    with tracing.stage(root, "auth"):
        pass
    with tracing.stage(root, "upstream", replica="r0") as upstream:
        headers: dict[str, str] = {}
        tracing.inject(upstream, headers)
    root.end()
    tracing.shutdown()
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {"POST /v1/chat/completions", "auth", "upstream"}
    request = spans["POST /v1/chat/completions"]
    assert format(request.context.trace_id, "032x") == CLIENT_TRACE
    assert request.parent is not None and format(request.parent.span_id, "016x") == CLIENT_PARENT
    for stage in ("auth", "upstream"):
        assert spans[stage].parent is not None
        assert spans[stage].parent.span_id == request.context.span_id
    assert spans["upstream"].attributes == {"replica": "r0"}
    # The engine gets a traceparent naming the upstream span, in the client's trace.
    upstream_id = format(spans["upstream"].context.span_id, "016x")
    assert headers["traceparent"] == f"00-{CLIENT_TRACE}-{upstream_id}-01"
    assert request.resource.attributes["service.name"] == "tidegate-test"


def test_a_failing_stage_records_the_exception() -> None:
    exporter = InMemorySpanExporter()
    tracing = Tracing(service_name="t", exporter=exporter)
    root = tracing.start_request("req", {})
    try:
        with tracing.stage(root, "validation"):
            raise ValueError("bad prompt")
    except ValueError:
        pass
    tracing.shutdown()
    [span] = [s for s in exporter.get_finished_spans() if s.name == "validation"]
    assert span.events[0].name == "exception"
