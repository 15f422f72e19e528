"""``tidegate batch submit | status | list | cancel | download`` against a real gateway (uvicorn
on loopback) in front of a fake upstream.

The CLI runs its own event loop (``asyncio.run``), so each invocation runs in a worker thread
while the gateway keeps serving on the test's loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from click.testing import Result
from typer.testing import CliRunner

from tests.support.gateway import RunningGateway, create_member, run_gateway
from tidegate.commands.batch import batch_app
from tidegate_testing.fake_server import FakeUpstream

# Poll fast so a batch of a few lines finishes in well under a second.
FAST_BATCH = {"batch": {"poll_interval_s": 0.05}, "metering": {"flush_interval_s": 0.05}}


@dataclass
class Env:
    gateway: RunningGateway
    key: str

    async def cli(self, *args: str, key: str | None = None) -> Result:
        argv = [*args, "--url", self.gateway.base_url, "--api-key", key or self.key]
        return await asyncio.to_thread(CliRunner().invoke, batch_app, argv)

    async def batch(self, batch_id: str) -> dict[str, Any]:
        done = await self.cli("status", batch_id, "--json")
        assert done.exit_code == 0, done.output
        data: dict[str, Any] = orjson.loads(done.stdout)
        return data


@asynccontextmanager
async def environment(tmp_path: Path, fake: FakeUpstream) -> AsyncIterator[Env]:
    async with (
        run_gateway(tmp_path / "home", upstreams=[fake], sections=FAST_BATCH) as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=30) as http,
    ):
        member = await create_member(http, "cli")
        yield Env(gateway, member.key)


def chat(content: str, **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 4, **fields}


def write_jsonl(path: Path, rows: list[Any], *, blank_after_first: bool = False) -> Path:
    lines = [orjson.dumps(row).decode() for row in rows]
    if blank_after_first:
        lines.insert(1, "")
    path.write_text("\n".join(lines) + "\n")
    return path


def custom_ids(path: Path) -> list[str]:
    return [orjson.loads(line)["custom_id"] for line in path.read_bytes().splitlines()]


async def test_submit_wait_downloads_then_status_list_and_download(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    full_line = {
        "custom_id": "mine",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "fake-model", **chat("four")},
    }
    source = write_jsonl(
        tmp_path / "in.jsonl",
        [chat("one"), chat("two"), chat("three"), full_line],
        blank_after_first=True,  # line numbers count blank lines: ids point at the file's lines
    )
    results = tmp_path / "results"
    async with environment(tmp_path, fake) as env:
        done = await env.cli(
            "submit", str(source), "--model", "fake-model", "--wait", "--poll", "0.1",
            "--out", str(results), "--metadata", "job=nightly",
        )  # fmt: skip
        assert done.exit_code == 0, done.output
        batch_id = done.stdout.splitlines()[0]
        assert batch_id.startswith("batch_")
        assert "uploaded 4 requests" in done.stderr
        output = results / f"{batch_id}_output.jsonl"
        assert f"{output} (4 lines)" in done.stdout
        assert sorted(custom_ids(output)) == ["line-1", "line-3", "line-4", "mine"]
        assert not (results / f"{batch_id}_errors.jsonl").exists()
        assert all(
            orjson.loads(line)["response"]["status_code"] == 200
            for line in output.read_bytes().splitlines()
        )
        # Every line went to the upstream with the model --model filled in.
        assert sorted(r["model"] for r in fake.requests) == ["fake-model"] * 4

        status = await env.cli("status", batch_id)
        assert status.exit_code == 0, status.output
        assert "completed" in status.stdout and "4 completed, 0 failed, 4 total" in status.stdout
        assert "job=nightly" in status.stdout
        data = await env.batch(batch_id)
        assert data["status"] == "completed" and data["metadata"] == {"job": "nightly"}

        listed = await env.cli("list", "--limit", "5")
        assert listed.exit_code == 0, listed.output
        assert batch_id in listed.stdout

        again = tmp_path / "again"
        fetched = await env.cli("download", batch_id, "--out", str(again))
        assert fetched.exit_code == 0, fetched.output
        assert (again / output.name).read_bytes() == output.read_bytes()


async def test_cancel_reaches_cancelled_with_partial_results(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    fake.behaviour.first_token_delay_s = 1.0  # ~13 s in all: cancel surely lands mid-batch
    source = write_jsonl(tmp_path / "in.jsonl", [chat(f"n{n}") for n in range(200)])
    async with environment(tmp_path, fake) as env:
        done = await env.cli("submit", str(source), "--model", "fake-model")
        assert done.exit_code == 0, done.output
        batch_id = done.stdout.strip()
        deadline = time.monotonic() + 60
        while (await env.batch(batch_id))["status"] != "in_progress":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        cancelled = await env.cli("cancel", batch_id)
        assert cancelled.exit_code == 0, cancelled.output
        assert cancelled.stdout.strip() in (f"{batch_id}: cancelling", f"{batch_id}: cancelled")
        while (data := await env.batch(batch_id))["status"] != "cancelled":
            assert time.monotonic() < deadline, data
            await asyncio.sleep(0.1)
        counts = data["request_counts"]
        # Lines that never ran count as failed (cancelled), as in the OpenAI API.
        assert counts["total"] == 200 and counts["completed"] < 200
        assert counts["completed"] + counts["failed"] == 200

        fetched = await env.cli("download", batch_id, "--out", str(tmp_path / "out"))
        assert fetched.exit_code == 0, fetched.output
        output = tmp_path / "out" / f"{batch_id}_output.jsonl"
        completed = custom_ids(output) if output.exists() else []
        cancelled = custom_ids(tmp_path / "out" / f"{batch_id}_errors.jsonl")
        # Partial results: what ran is delivered, the rest is reported as cancelled, and every
        # line appears exactly once across the two files.
        assert len(completed) == counts["completed"] and cancelled
        assert sorted(completed + cancelled) == sorted(f"line-{n}" for n in range(1, 201))


async def test_bad_files_and_gateway_errors_are_clear(tmp_path: Path, fake: FakeUpstream) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text(orjson.dumps(chat("ok")).decode() + "\n{not json\n")
    async with environment(tmp_path, fake) as env:
        # Refused before anything is uploaded, naming the line.
        done = await env.cli("submit", str(broken), "--model", "fake-model")
        assert done.exit_code == 1
        assert "broken.jsonl: line 2: not valid JSON" in done.stderr
        no_model = write_jsonl(tmp_path / "nomodel.jsonl", [chat("x")])
        done = await env.cli("submit", str(no_model))
        assert done.exit_code == 1 and "line 1: the request has no model; pass --model" in (
            done.stderr
        )
        assert fake.requests == []

        # Refused by the gateway's validation: the batch fails, its errors carry line numbers.
        duplicate = {"custom_id": "same", "body": {"model": "fake-model", **chat("a")}}
        dup_file = write_jsonl(tmp_path / "dup.jsonl", [duplicate, duplicate])
        done = await env.cli("submit", str(dup_file), "--wait", "--poll", "0.1")
        assert done.exit_code == 1, done.output
        assert "failed" in done.stdout
        assert "error: line 2:" in done.stdout

        # A gateway error answer: its message, and exit status 1.
        missing = await env.cli("status", "batch_" + "0" * 24)
        assert missing.exit_code == 1
        assert missing.stderr.startswith("error: ") and "(HTTP 404)" in missing.stderr
        bad_key = await env.cli("list", key="tg-not-a-key")
        assert bad_key.exit_code == 1 and "(HTTP 401)" in bad_key.stderr


async def test_unreachable_gateway(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [chat("x")])
    argv = ["submit", str(source), "--model", "m", "--url", "http://127.0.0.1:9/v1"]
    done = await asyncio.to_thread(CliRunner().invoke, batch_app, argv)
    assert done.exit_code == 1
    assert "cannot reach http://127.0.0.1:9/v1/files" in done.stderr
