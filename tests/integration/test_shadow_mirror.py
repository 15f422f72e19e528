"""ShadowMirror on real components without a gateway: a routing table whose shadow pool is a
fake upstream on loopback, the real upstream client, the real usage meter, the real store
(SQLite and PostgreSQL). The tap's calls (maybe_mirror, primary_finished) are made by hand."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.metering import UsageMeter, UsageQueries
from tidegate.observability.capture import ResponseCapture
from tidegate.observability.records import RequestRecord
from tidegate.pipeline.completions import PreparedRequest
from tidegate.protocol.requests import CompletionRequest
from tidegate.rollout.metrics import RolloutMetrics
from tidegate.rollout.shadow import ShadowMirror
from tidegate.rollout.sync import ShadowTarget
from tidegate.routing.replica import Replica, ReplicaState
from tidegate.routing.replicas import RoutingTable
from tidegate.store.models import ShadowComparison
from tidegate.upstream.client import UpstreamClient, UpstreamTimeouts
from tidegate_testing.fake_server import FakeBehaviour, FakeUpstream

TARGET = ShadowTarget(pool="shadow", sample=1.0)
GOOD_JSON = '{"city": "Paris", "temp": 3}'
_ids = itertools.count()


@dataclass
class Rig:
    fake: FakeUpstream
    routing: RoutingTable
    replica: Replica
    meter: UsageMeter
    sessions: async_sessionmaker[AsyncSession]
    registry: CollectorRegistry
    client: UpstreamClient

    def mirror(self, **options: Any) -> ShadowMirror:
        values: dict[str, Any] = {"max_concurrency": 4, "timeout_s": 5.0, "flush_interval_s": 0.05}
        values.update(options)
        return ShadowMirror(
            sessions=self.sessions,
            routing=self.routing,
            providers={"openai": self.client},
            meter=self.meter,
            metrics=RolloutMetrics(self.registry),
            redact=lambda text: text.replace("Paris", "[CITY]"),
            **values,
        )

    def counted(self, outcome: str) -> float:
        value = self.registry.get_sample_value(
            "tidegate_shadow_requests_total", {"model": "chat", "outcome": outcome}
        )
        return value or 0.0

    async def rows(self) -> list[ShadowComparison]:
        async with self.sessions() as session:
            return list(await session.scalars(select(ShadowComparison)))


@pytest.fixture
async def rig(tmp_path: Path, sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[Rig]:
    fake = FakeUpstream(model="fake-shadow")
    await fake.start()
    routing = RoutingTable()
    replica = Replica(
        id="s0",
        model="chat",
        base_url=fake.base_url,
        upstream_model=fake.model,
        pool="shadow",
        state=ReplicaState.READY,
    )
    routing.add(replica)
    meter = UsageMeter(
        sessions=sessions, wal_dir=tmp_path / "wal", flush_interval_s=0.05, batch_size=100
    )
    await meter.start()
    async with aiohttp.ClientSession() as http:
        client = UpstreamClient(session=http, timeouts=UpstreamTimeouts())
        yield Rig(fake, routing, replica, meter, sessions, CollectorRegistry(), client)
    await meter.stop()
    await fake.stop()


def request(**payload: Any) -> PreparedRequest:
    body = {"model": "chat", "messages": [{"role": "user", "content": "weather in Paris"}]}
    body.update(payload)
    return PreparedRequest(CompletionRequest("chat", body), (), False, None, None)  # type: ignore[arg-type]


def record(*, log_prompt: bool = False, text: str = GOOD_JSON) -> RequestRecord:
    rec = RequestRecord(request_id=f"req-{next(_ids)}", route="chat", model="chat")
    rec.tenant_id, rec.key_id, rec.pool, rec.replica = "ten_a", "key_a", "stable", "p0"
    rec.log_prompt = log_prompt
    rec.capture = ResponseCapture(texts=[text], finish_reason="stop")
    return rec


def finish(rec: RequestRecord, tokens: int = 8) -> None:
    """What the primary's relay and metering would have filled in."""
    rec.ttft_s = 0.01
    rec.prompt_tokens = 3
    rec.completion_tokens = tokens


def always(value: float) -> Callable[[], float]:
    return lambda: value


async def test_a_mirrored_request_is_compared_metered_apart_and_stored(rig: Rig) -> None:
    rig.fake.behaviour = FakeBehaviour(content='{"city": "Paris", "temp": ')
    mirror = rig.mirror(rng=always(0.0))
    await mirror.start()
    rec = record(log_prompt=True)
    assert mirror.maybe_mirror(request(response_format={"type": "json_object"}), rec, TARGET)
    finish(rec)
    mirror.primary_finished(rec, duration_s=0.08)
    await mirror.stop()

    (sent,) = rig.fake.requests
    assert sent["model"] == "fake-shadow"
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert rig.replica.outstanding == 0
    (row,) = await rig.rows()
    assert (row.request_id, row.model, row.tenant_id) == (rec.request_id, "chat", "ten_a")
    assert (row.primary_pool, row.shadow_pool) == ("stable", "shadow")
    assert row.primary["json_valid"] is True and row.shadow["json_valid"] is False
    assert row.primary["e2e_ms"] == 80.0
    assert row.primary["itl_ms"] == pytest.approx(10.0)  # (80 - 10) / 7
    assert row.shadow["error"] is None and row.shadow["finish_reason"] == "stop"
    assert row.shadow["completion_tokens"] == 7  # 26 characters, 4 per token
    assert row.shadow["ttft_ms"] is not None and row.shadow["e2e_ms"] >= row.shadow["ttft_ms"]
    assert row.outputs_differ is True and 0 < (row.similarity or 0) < 1
    # Texts kept (the tenant logs prompts), through the redactor.
    assert row.primary["text"] == '{"city": "[CITY]", "temp": 3}'
    assert row.shadow["text"] == '{"city": "[CITY]", "temp": '
    assert rig.counted("mirrored") == 1

    await rig.meter.flush()
    usage = UsageQueries(sessions=rig.sessions)
    page = await usage.list_records("ten_a", None, None, limit=10)
    (event,) = page.records
    assert event.request_id == f"{rec.request_id}:shadow"
    assert (event.kind, event.cost_usd, event.model, event.replica) == ("shadow", 0.0, "chat", "s0")
    assert event.completion_tokens == 7 and event.prompt_tokens == 3
    # Never charged: neither the budget seeding's spend nor the rollups see it.
    assert (await usage.spend_so_far("ten_a", "day")).tokens == 0
    assert await usage.usage_rollup("ten_a", None, None, "day") == []


async def test_texts_are_not_stored_without_prompt_logging(rig: Rig) -> None:
    mirror = rig.mirror()
    await mirror.start()
    rec = record(log_prompt=False)
    assert mirror.maybe_mirror(request(), rec, TARGET)
    finish(rec)
    mirror.primary_finished(rec, duration_s=0.05)
    await mirror.stop()
    (row,) = await rig.rows()
    assert "text" not in row.primary and "text" not in row.shadow
    assert row.primary["json_valid"] is None  # JSON was not asked for


async def test_nothing_is_compared_with_itself_or_with_an_abandoned_answer(rig: Rig) -> None:
    mirror = rig.mirror(rng=always(0.0))
    await mirror.start()
    # The split sent the request to the shadow pool itself: there is nothing to compare.
    to_shadow = PreparedRequest(
        CompletionRequest("chat", {"model": "chat"}),
        (rig.routing.pool("shadow"),),
        False,
        None,  # type: ignore[arg-type]
        None,
    )
    assert not mirror.maybe_mirror(to_shadow, record(), TARGET)
    # The client left before its answer ended: the shadow is metered, no pair is stored.
    gone = record()
    assert mirror.maybe_mirror(request(), gone, TARGET)
    gone.outcome = "client_closed"
    mirror.primary_finished(gone, duration_s=0.05)
    await mirror.stop()
    assert rig.fake.requests and await rig.rows() == []


async def test_sampling_draws_against_the_share(rig: Rig) -> None:
    mirror = rig.mirror(rng=always(0.5))
    await mirror.start()
    assert not mirror.maybe_mirror(request(), record(), ShadowTarget("shadow", 0.3))
    assert not mirror.maybe_mirror(request(), record(), None)
    rec = record()
    assert mirror.maybe_mirror(request(), rec, ShadowTarget("shadow", 0.6))
    mirror.primary_finished(rec, duration_s=0.01)
    await mirror.stop()
    assert rig.counted("mirrored") == 1 and rig.counted("dropped") == 0
    assert len(rig.fake.requests) == 1


async def test_beyond_max_concurrency_requests_are_dropped_and_counted(rig: Rig) -> None:
    rig.fake.behaviour = FakeBehaviour(fault="hang")
    mirror = rig.mirror(max_concurrency=2, stop_grace_s=0.2)
    await mirror.start()
    records = [record() for _ in range(5)]
    mirrored = [mirror.maybe_mirror(request(), rec, TARGET) for rec in records]
    assert mirrored == [True, True, False, False, False]
    assert rig.counted("dropped") == 3 and rig.counted("mirrored") == 2
    assert mirror.in_flight == 2
    await asyncio.wait_for(mirror.stop(), timeout=5)  # cancels the hanging shadows
    assert mirror.in_flight == 0 and rig.replica.outstanding == 0
    assert await rig.rows() == []  # nothing finished, nothing written


async def test_shadow_failures_are_recorded_never_raised_nor_held_against_replicas(
    rig: Rig,
) -> None:
    rig.fake.behaviour = FakeBehaviour(fault="status_500")
    mirror = rig.mirror()
    await mirror.start()
    failing, lost = record(), record()
    assert mirror.maybe_mirror(request(), failing, TARGET)
    assert mirror.maybe_mirror(request(), lost, ShadowTarget("gone", 1.0))
    for rec in (failing, lost):
        finish(rec)
        mirror.primary_finished(rec, duration_s=0.02)
    await mirror.stop()
    errors = {row.request_id: row.shadow["error"] for row in await rig.rows()}
    assert errors == {failing.request_id: "status", lost.request_id: "unknown_pool"}
    assert rig.counted("error") == 2
    # Outlier ejection and breakers are the primary path's business: untouched.
    assert rig.replica.consecutive_failures == 0 and rig.replica.ejected_until == 0
    assert rig.replica.outstanding == 0  # the exchange gave its lease back with the error
    rows = await rig.rows()
    assert all(row.outputs_differ is None and row.similarity is None for row in rows)
    assert all(row.primary["error"] is None for row in rows)


async def test_a_slow_shadow_times_out(rig: Rig) -> None:
    rig.fake.behaviour = FakeBehaviour(first_token_delay_s=5.0)
    mirror = rig.mirror(timeout_s=0.3)
    await mirror.start()
    rec = record()
    assert mirror.maybe_mirror(request(), rec, TARGET)
    finish(rec)
    mirror.primary_finished(rec, duration_s=0.02)
    await asyncio.sleep(0.6)
    await mirror.stop()
    (row,) = await rig.rows()
    assert row.shadow["error"] == "timeout"
    assert rig.counted("timeout") == 1
    assert rig.fake.cancelled == 1 or await rig.fake.wait_idle(2)  # the stream was torn down
    assert rig.replica.outstanding == 0  # and its lease given back


async def test_a_primary_that_never_finishes_is_written_as_unfinished(rig: Rig) -> None:
    mirror = rig.mirror(timeout_s=0.3)
    await mirror.start()
    rec = record()
    assert mirror.maybe_mirror(request(), rec, TARGET)
    await asyncio.sleep(0.8)
    await mirror.stop()
    (row,) = await rig.rows()
    assert row.primary["error"] == "unfinished"
    assert row.shadow["error"] is None


async def test_stop_writes_shadows_that_answered_while_their_primary_is_still_going(
    rig: Rig,
) -> None:
    mirror = rig.mirror(stop_grace_s=0.3)
    await mirror.start()
    rec = record()
    assert mirror.maybe_mirror(request(), rec, TARGET)
    await asyncio.sleep(0.1)  # the shadow answers at once; the primary never reports
    await mirror.stop()
    (row,) = await rig.rows()
    assert row.primary["error"] == "unfinished"
