"""The Batch API end to end with the official openai client against the fake upstream: upload,
create, poll, download; validation with line numbers; expiry; cancel; tenant isolation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai import AsyncOpenAI
from openai.types import Batch

from tests.support.gateway import (
    MemberKey,
    RunningGateway,
    create_member,
    run_gateway,
    usage_records,
)
from tidegate_testing.fake_server import FakeUpstream

MODEL = "fake-model"
FAST = {"poll_interval_s": 0.05, "lease_s": 5}


def chat_line(custom_id: str, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": MODEL,
            "messages": [{"role": "user", "content": f"hello {custom_id}"}],
            "max_tokens": 4,
            **body,
        },
    }


def jsonl(lines: list[Any]) -> bytes:
    return b"".join(
        (line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n" for line in lines
    )


@pytest.fixture
async def setup(
    tmp_path: Path, fake: FakeUpstream, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[RunningGateway, MemberKey, MemberKey, httpx.AsyncClient]]:
    batch = {**FAST, **getattr(request, "param", {})}
    async with (
        run_gateway(tmp_path, upstreams=[fake], sections={"batch": batch}) as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=30) as http,
    ):
        alice = await create_member(http, "alice")
        bob = await create_member(http, "bob")
        yield gateway, alice, bob, http


def client(gateway: RunningGateway, member: MemberKey) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=gateway.base_url, api_key=member.key, max_retries=0)


async def submit(api: AsyncOpenAI, lines: list[Any], window: str = "24h") -> Batch:
    uploaded = await api.files.create(file=("input.jsonl", jsonl(lines)), purpose="batch")
    return await api.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window=window,  # type: ignore[arg-type]
        metadata={"job": "test"},
    )


async def wait_for(api: AsyncOpenAI, batch_id: str, *statuses: str, timeout_s: float = 30) -> Batch:
    deadline = time.monotonic() + timeout_s
    while True:
        batch = await api.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}"
        await asyncio.sleep(0.05)


async def read_lines(api: AsyncOpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    content = await api.files.content(file_id)
    return [orjson.loads(line) for line in content.content.splitlines() if line.strip()]


async def test_batch_runs_to_completion_with_one_line_per_custom_id(
    setup: tuple[RunningGateway, MemberKey, MemberKey, httpx.AsyncClient], fake: FakeUpstream
) -> None:
    gateway, alice, _, http = setup
    api = client(gateway, alice)
    ids = [f"req-{n}" for n in range(25)]
    created = await submit(api, [chat_line(i) for i in ids])
    assert created.status == "validating" and created.object == "batch"
    assert created.metadata == {"job": "test"} and created.expires_at is not None

    done = await wait_for(api, created.id, "completed", "failed")
    assert done.status == "completed", done.errors
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (25, 25)
    assert done.request_counts.failed == 0 and done.error_file_id is None
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    output = await read_lines(api, done.output_file_id)
    assert sorted(line["custom_id"] for line in output) == sorted(ids)
    first = output[0]
    assert first["error"] is None and first["response"]["status_code"] == 200
    assert first["response"]["body"]["object"] == "chat.completion"
    assert first["id"] == first["response"]["request_id"]
    assert first["id"].startswith(f"batch_req_{created.id}_")

    # Every line was served once and metered once, at the batch class, as alice's key.
    assert fake.completed == 25
    records = await usage_records(http, [line["id"] for line in output])
    mine = [r for r in records if r["request_id"].startswith("batch_req_")]
    assert len(mine) == 25 and all(r["key_id"] == alice.key_id for r in mine)
    assert all(r["kind"] == "batch" for r in mine)
    assert all(r["completion_tokens"] == 4 for r in mine)

    page = await api.batches.list(limit=10)
    assert [b.id for b in page.data] == [created.id]


async def test_validation_reports_every_problem_with_its_line_number(
    setup: tuple[RunningGateway, MemberKey, MemberKey, httpx.AsyncClient], fake: FakeUpstream
) -> None:
    gateway, alice, _, _ = setup
    api = client(gateway, alice)
    lines: list[Any] = [
        chat_line("ok-1"),
        b"{not json",
        chat_line("ok-1"),  # duplicate custom_id
        {**chat_line("wrong-url"), "url": "/v1/completions"},
        {**chat_line("wrong-method"), "method": "GET"},
        chat_line("no-such-model", model="missing-model"),
        chat_line("bad-body", max_tokens=-1),
        {"method": "POST", "url": "/v1/chat/completions", "body": {}},  # no custom_id
        chat_line("ok-2"),
    ]
    created = await submit(api, lines)
    failed = await wait_for(api, created.id, "failed", "completed")
    assert failed.status == "failed" and failed.failed_at is not None
    assert failed.errors is not None and failed.errors.data is not None
    by_line = {e.line: e for e in failed.errors.data}
    assert sorted(by_line) == [2, 3, 4, 5, 6, 7, 8]
    assert by_line[3].code == "duplicate_custom_id"
    assert by_line[6].code == "model_not_found"
    assert by_line[7].param == "max_tokens"
    assert fake.completed == 0  # nothing of a failed batch ran


@pytest.mark.parametrize("setup", [{"concurrency_per_batch": 1}], indirect=True)
async def test_expiry_delivers_completed_lines_and_expires_the_rest(
    setup: tuple[RunningGateway, MemberKey, MemberKey, httpx.AsyncClient], fake: FakeUpstream
) -> None:
    gateway, alice, _, _ = setup
    fake.behaviour.first_token_delay_s = 0.1
    api = client(gateway, alice)
    ids = [f"line-{n}" for n in range(60)]
    created = await submit(api, [chat_line(i) for i in ids], window="2s")
    assert created.completion_window == "2s"
    expired = await wait_for(api, created.id, "expired", "completed", timeout_s=20)
    assert expired.status == "expired" and expired.expired_at is not None
    output = await read_lines(api, expired.output_file_id)
    errors = await read_lines(api, expired.error_file_id)
    assert output and errors
    assert sorted(line["custom_id"] for line in output + errors) == sorted(ids)
    assert {line["error"]["code"] for line in errors} == {"batch_expired"}
    counts = expired.request_counts
    assert counts is not None
    assert (counts.total, counts.completed, counts.failed) == (60, len(output), len(errors))


@pytest.mark.parametrize("setup", [{"concurrency_per_batch": 2}], indirect=True)
async def test_cancel_finishes_lines_in_flight_and_cancels_the_rest(
    setup: tuple[RunningGateway, MemberKey, MemberKey, httpx.AsyncClient], fake: FakeUpstream
) -> None:
    gateway, alice, _, _ = setup
    fake.behaviour.first_token_delay_s = 0.1
    api = client(gateway, alice)
    ids = [f"line-{n}" for n in range(40)]
    created = await submit(api, [chat_line(i) for i in ids])
    running = await wait_for(api, created.id, "in_progress")
    while running.request_counts is None or running.request_counts.completed < 4:
        await asyncio.sleep(0.05)
        running = await api.batches.retrieve(created.id)
    cancelling = await api.batches.cancel(created.id)
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at
    cancelled = await wait_for(api, created.id, "cancelled")
    assert cancelled.cancelled_at is not None
    output = await read_lines(api, cancelled.output_file_id)
    errors = await read_lines(api, cancelled.error_file_id)
    assert len(output) >= 4 and errors
    assert sorted(line["custom_id"] for line in output + errors) == sorted(ids)
    assert {line["error"]["code"] for line in errors} == {"batch_cancelled"}
    # No line started after the cancel had reached the runner: at most those in flight.
    assert fake.completed == len(output)


async def test_another_tenants_batch_and_file_look_like_missing_ones(
    setup: tuple[RunningGateway, MemberKey, MemberKey, httpx.AsyncClient],
) -> None:
    gateway, alice, bob, http = setup
    api = client(gateway, alice)
    created = await submit(api, [chat_line("a")])
    await wait_for(api, created.id, "completed")

    def same(path: str, method: str = "GET", body: dict[str, Any] | None = None) -> Any:
        async def compare() -> None:
            theirs = await http.request(
                method, path.format(created.id), json=body, headers=bob.headers
            )
            missing_id = "batch_" + "0" * 24
            none = await http.request(
                method, path.format(missing_id), json=body, headers=bob.headers
            )
            assert theirs.status_code == none.status_code == 404
            assert (
                theirs.json()["error"]["message"].replace(created.id, missing_id)
                == (none.json()["error"]["message"])
            )

        return compare()

    await same("/v1/batches/{}")
    await same("/v1/batches/{}/cancel", "POST")
    listed = await http.get("/v1/batches", headers=bob.headers)
    assert listed.json()["data"] == []
    # Bob cannot start a batch on Alice's input file: answered like an unknown file id.
    bob_api = client(gateway, bob)
    with pytest.raises(openai.NotFoundError) as theirs:
        await bob_api.batches.create(
            input_file_id=created.input_file_id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
    with pytest.raises(openai.NotFoundError) as unknown:
        await bob_api.batches.create(
            input_file_id="file-missing", endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert theirs.value.status_code == unknown.value.status_code == 404


async def test_list_is_paginated_newest_first(
    setup: tuple[RunningGateway, MemberKey, MemberKey, httpx.AsyncClient],
) -> None:
    gateway, alice, _, _ = setup
    api = client(gateway, alice)
    ids = [(await submit(api, [chat_line("x")])).id for _ in range(5)]
    first = await api.batches.list(limit=2)
    assert [b.id for b in first.data] == ids[::-1][:2] and first.has_more
    rest = await api.batches.list(limit=10, after=first.data[-1].id)
    assert [b.id for b in rest.data] == ids[::-1][2:] and not rest.has_more
    with pytest.raises(openai.BadRequestError):
        await api.batches.create(
            input_file_id="file-x",
            endpoint="/v1/embeddings",
            completion_window="24h",  # type: ignore[arg-type]
        )


@pytest.mark.parametrize("setup", [{"lease_s": 0.6, "poll_interval_s": 0.05}], indirect=True)
async def test_a_line_running_longer_than_its_lease_is_not_run_twice(
    setup: tuple[RunningGateway, MemberKey, MemberKey, httpx.AsyncClient], fake: FakeUpstream
) -> None:
    """The runner renews the leases of the lines it runs, so a slow line is not taken over."""
    gateway, alice, _, _ = setup
    fake.behaviour.first_token_delay_s = 2.0  # more than three leases
    api = client(gateway, alice)
    created = await submit(api, [chat_line(f"slow-{n}") for n in range(3)])
    done = await wait_for(api, created.id, "completed", "failed", timeout_s=30)
    assert done.status == "completed"
    assert len(fake.requests) == 3  # each line reached the upstream once
