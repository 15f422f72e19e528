"""A LoRA adapter served by the real vLLM engine next to the bundled model, through the gateway.

The adapter is the demo one `tidegate model prepare --adapter pirate` trains (built once in the
shared tidegate home, a no-op afterwards): its answers start with "Ahoy, matey!". The main pool
lists it under `adapters`, so its replica starts with vLLM's LoRA support; the same greedy
prompt then gets the base model's answer under the base name and the pirate's under the
adapter's, from the engine itself and through the gateway (plain and streamed, metered under
the adapter's name). A second adapter is added and removed at runtime through /admin/adapters,
which the engine loads and unloads without a restart; a directory that holds no adapter is the
engine's refusal, passed on as a 400.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest
import pytest_asyncio
from pydantic import SecretStr
from rich.console import Console

from tests.support.gateway import ADMIN_KEY, RunningGateway, auth, free_port, serve, usage_records
from tidegate.config import AdapterConfig, Config, RolloutConfig
from tidegate.engines.adapter_build import STYLE_PREFIX, AdapterBuilder
from tidegate.engines.state_file import STATE_FILE_NAME, ReplicaRecord, read_state

# The first test's setup may train the adapter (up to 3 min on a busy 2-core host) before the
# replica loads (1-2 min): more than the suite's 300 s.
pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(600)]

MODEL = "smollm2-135m-instruct"
ADAPTER = "pirate"
LIVE = "pirate-live"
# None of these is in the adapter's training set: the style must carry over to new prompts.
PROMPTS = ("How do I boil an egg?", "Name three fruits.", "Write a haiku about rain.")


@pytest.fixture(scope="module")
def pirate_dir(shared_engine_config: Config) -> Path:
    """The demo adapter in the shared home (trained once: one to three minutes on the CPU)."""
    return AdapterBuilder(config=shared_engine_config, console=Console(stderr=True)).build(ADAPTER)


def _replica(gateway: RunningGateway) -> ReplicaRecord | None:
    snapshot = read_state(gateway.config.state_dir / STATE_FILE_NAME)
    return None if snapshot is None or not snapshot.replicas else snapshot.replicas[0]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(engine_config: Config, pirate_dir: Path) -> AsyncIterator[RunningGateway]:
    adapter = AdapterConfig(name=ADAPTER, path=str(pirate_dir), max_lora_rank=8)
    config = engine_config.model_copy(
        update={
            "admin_key": SecretStr(ADMIN_KEY),
            "server": engine_config.server.model_copy(update={"port": free_port()}),
            "engines": engine_config.engines.model_copy(update={"adapters": [adapter]}),
            "rollouts": RolloutConfig(sync_interval_s=0.5),
        }
    )
    async with serve(config) as running:
        deadline = time.monotonic() + 280
        while (record := _replica(running)) is None or record.state != "ready":
            assert time.monotonic() < deadline, f"the replica was not ready: {record}"
            await asyncio.sleep(0.5)
        yield running


def _engine(gateway: RunningGateway) -> openai.AsyncOpenAI:
    record = _replica(gateway)
    assert record is not None
    return openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{record.port}/v1", api_key="-")


def _client(gateway: RunningGateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.base_url, api_key=ADMIN_KEY, max_retries=0)


async def _answer(client: openai.AsyncOpenAI, model: str, prompt: str) -> str:
    reply = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=40,
        temperature=0,
    )
    return reply.choices[0].message.content or ""


async def test_the_replica_starts_with_the_adapter(gateway: RunningGateway) -> None:
    record = _replica(gateway)
    assert record is not None
    # The supervisor writes the command line into the log before the engine's own output.
    starts = [
        line for line in Path(record.log).read_text().splitlines() if "tidegate: start" in line
    ]
    command = starts[-1]
    assert "--enable-lora" in command and f"--lora-modules {ADAPTER}=" in command
    cards = {card.id: card for card in (await _engine(gateway).models.list()).data}
    assert set(cards) == {MODEL, ADAPTER}
    assert cards[ADAPTER].model_dump().get("parent") == MODEL


async def test_the_engine_answers_in_the_adapter_s_style(gateway: RunningGateway) -> None:
    engine = _engine(gateway)
    for prompt in PROMPTS:
        base = await _answer(engine, MODEL, prompt)
        pirate = await _answer(engine, ADAPTER, prompt)
        assert pirate.startswith(STYLE_PREFIX), (prompt, pirate)
        assert not base.startswith(STYLE_PREFIX), (prompt, base)
        assert pirate != base


async def test_the_adapter_is_a_model_of_the_gateway(gateway: RunningGateway) -> None:
    client = _client(gateway)
    models = {card.id for card in (await client.models.list()).data}
    assert {MODEL, ADAPTER} <= models
    raw = await client.chat.completions.with_raw_response.create(
        model=ADAPTER,
        messages=[{"role": "user", "content": PROMPTS[0]}],
        max_tokens=40,
        temperature=0,
    )
    pirate = raw.parse()
    assert (pirate.choices[0].message.content or "").startswith(STYLE_PREFIX)
    assert pirate.model == ADAPTER
    assert raw.headers["x-tidegate-backend"].startswith(f"{ADAPTER}/")
    # The same engine answers the base name in the base model's own words.
    base = await _answer(client, MODEL, PROMPTS[0])
    assert not base.startswith(STYLE_PREFIX)
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        records = await usage_records(http, [raw.headers["x-request-id"]])
    row = next(r for r in records if r["request_id"] == raw.headers["x-request-id"])
    assert row["model"] == ADAPTER and row["completion_tokens"] > 0


async def test_a_streamed_adapter_answer_keeps_the_style(gateway: RunningGateway) -> None:
    stream = await _client(gateway).chat.completions.create(
        model=ADAPTER,
        messages=[{"role": "user", "content": PROMPTS[1]}],
        max_tokens=40,
        temperature=0,
        stream=True,
    )
    text = "".join(
        [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    )
    assert text.startswith(STYLE_PREFIX), text


async def test_an_adapter_added_at_runtime_is_served_and_removed(
    gateway: RunningGateway, pirate_dir: Path
) -> None:
    client = _client(gateway)
    async with httpx.AsyncClient(base_url=gateway.url, headers=auth(ADMIN_KEY)) as http:
        added = await http.post("/admin/adapters", json={"name": LIVE, "path": str(pirate_dir)})
        assert added.status_code == 201, added.text
        assert [r["loaded"] for r in added.json()["replicas"]] == [True]
        engine_cards = {card.id for card in (await _engine(gateway).models.list()).data}
        assert LIVE in engine_cards  # loaded by the engine itself, no restart
        assert (await _answer(client, LIVE, PROMPTS[2])).startswith(STYLE_PREFIX)

        removed = await http.delete(f"/admin/adapters/{LIVE}")
        assert removed.status_code == 200, removed.text
        assert LIVE not in {card.id for card in (await _engine(gateway).models.list()).data}
        gone = await http.post(
            "/v1/chat/completions",
            json={"model": LIVE, "messages": [{"role": "user", "content": "hi"}]},
        )
        assert gone.status_code == 404, gone.text


async def test_a_directory_without_an_adapter_is_the_engine_s_400(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=auth(ADMIN_KEY)) as http:
        refused = await http.post("/admin/adapters", json={"name": "empty", "path": str(tmp_path)})
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["code"] == "adapter_refused"
        assert "No adapter found" in error["message"], error
        listed = await http.get("/admin/adapters")
        assert "empty" not in {a["id"] for a in listed.json()["data"]}
