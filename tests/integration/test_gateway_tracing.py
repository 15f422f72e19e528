"""OpenTelemetry spans of a real gateway (uvicorn on loopback) in front of a fake upstream,
collected with an in-memory exporter: one span per request with a child per stage, the client's
traceparent continued, and a traceparent sent to the engine that names the upstream span."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.support.gateway import create_member, run_gateway
from tidegate_testing.fake_server import FakeUpstream

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hello"}]}
STAGES = ["auth", "validation", "limits", "upstream"]
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_PARENT = "00f067aa0ba902b7"


@asynccontextmanager
async def traced(
    tmp_path: Path, fake: FakeUpstream, exporter: InMemorySpanExporter
) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway exporting into `exporter`; spans are all exported once the block is left (the
    gateway's shutdown flushes its batch processor)."""
    async with (
        run_gateway(tmp_path, upstreams=[fake], span_exporter=exporter) as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=30) as http,
    ):
        yield http


def request_spans(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith("POST /v1/")]


def children(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return sorted(
        (s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id),
        key=lambda s: s.start_time or 0,
    )


def traceparent_ids(value: str) -> tuple[str, str]:
    version, trace_id, parent_id, flags = value.split("-")
    assert version == "00" and int(flags, 16) & 1  # sampled
    return trace_id, parent_id


async def test_a_request_has_a_span_per_stage(tmp_path: Path, fake: FakeUpstream) -> None:
    exporter = InMemorySpanExporter()
    async with traced(tmp_path, fake, exporter) as http:
        key = await create_member(http, "traced")
        response = await http.post("/v1/chat/completions", json=CHAT, headers=key.headers)
        assert response.status_code == 200
    spans = exporter.get_finished_spans()
    [root] = request_spans(spans)
    assert root.name == "POST /v1/chat/completions" and root.kind is SpanKind.SERVER
    assert root.parent is None
    assert root.attributes is not None
    assert root.attributes["tidegate.outcome"] == "ok"
    assert root.attributes["http.response.status_code"] == 200
    stages = children(spans, root)
    assert [s.name for s in stages] == STAGES
    assert root.context is not None
    for stage in stages:
        assert stage.context is not None
        assert stage.context.trace_id == root.context.trace_id
        assert stage.start_time is not None and root.start_time is not None
        assert stage.end_time is not None and root.end_time is not None
        assert root.start_time <= stage.start_time <= stage.end_time <= root.end_time
    upstream = stages[-1]
    assert upstream.attributes is not None and upstream.attributes["replica"] == "u0"

    # The engine got a traceparent in the request's trace whose parent is the upstream span.
    assert upstream.context is not None
    trace_id, parent_id = traceparent_ids(fake.request_headers[-1]["traceparent"])
    assert trace_id == f"{root.context.trace_id:032x}"
    assert parent_id == f"{upstream.context.span_id:016x}"


async def test_client_traceparent_is_continued_to_the_engine(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    exporter = InMemorySpanExporter()
    headers: dict[str, Any]
    async with traced(tmp_path, fake, exporter) as http:
        key = await create_member(http, "traced")
        headers = {**key.headers, "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"}
        for stream in (False, True):
            response = await http.post(
                "/v1/chat/completions", json={**CHAT, "stream": stream}, headers=headers
            )
            assert response.status_code == 200
    spans = exporter.get_finished_spans()
    roots = request_spans(spans)
    assert len(roots) == 2 and len(fake.request_headers) == 2
    for root, sent in zip(roots, fake.request_headers, strict=True):
        assert root.context is not None and root.parent is not None
        assert f"{root.context.trace_id:032x}" == CLIENT_TRACE
        assert f"{root.parent.span_id:016x}" == CLIENT_PARENT
        assert root.parent.is_remote
        [upstream] = [s for s in children(spans, root) if s.name == "upstream"]
        assert upstream.context is not None
        trace_id, parent_id = traceparent_ids(sent["traceparent"])
        assert trace_id == CLIENT_TRACE
        assert parent_id == f"{upstream.context.span_id:016x}"
    # Two requests, two distinct request spans in the one client trace.
    assert roots[0].context is not None and roots[1].context is not None
    assert roots[0].context.span_id != roots[1].context.span_id


async def test_a_refused_request_has_no_upstream_span(tmp_path: Path, fake: FakeUpstream) -> None:
    exporter = InMemorySpanExporter()
    async with traced(tmp_path, fake, exporter) as http:
        key = await create_member(http, "traced")
        response = await http.post(
            "/v1/chat/completions", json={**CHAT, "n": 0}, headers=key.headers
        )
        assert response.status_code == 400
        unknown = await http.post(
            "/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer tg-unknown"}
        )
        assert unknown.status_code == 401
    spans = exporter.get_finished_spans()
    invalid, unauthenticated = request_spans(spans)
    assert invalid.attributes is not None
    assert invalid.attributes["http.response.status_code"] == 400
    assert invalid.attributes["tidegate.outcome"] == "validation"
    # The body failed the schema before validation's own stage; no span reached the upstream.
    assert [s.name for s in children(spans, invalid)] == ["auth"]
    [auth] = children(spans, unauthenticated)
    assert auth.name == "auth" and [e.name for e in auth.events] == ["exception"]
    assert unauthenticated.attributes is not None
    assert unauthenticated.attributes["http.response.status_code"] == 401
    assert fake.requests == []
