"""vLLM's runtime LoRA endpoints as ``upstream.lora`` reads them, against a server on loopback
that answers each way an engine may: success, "already loaded", refusals, not-found, broken
JSON, and no server at all."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from tests.support.gateway import free_port
from tidegate.upstream.lora import load_adapter, loaded_adapters, unload_adapter


async def _load(request: web.Request) -> web.Response:
    name = (await request.json())["lora_name"]
    if name == "new":
        return web.Response(text="Success: LoRA adapter 'new' added successfully.")
    if name == "again":
        return web.json_response(
            {"message": "The lora adapter 'again' has already been loaded."}, status=400
        )
    return web.json_response({"message": "Loading lora bad failed: no adapter"}, status=400)


async def _unload(request: web.Request) -> web.Response:
    name = (await request.json())["lora_name"]
    if name == "gone":
        return web.json_response({"message": "cannot be found"}, status=404)
    return web.json_response({"message": "engine broke"}, status=500)


async def _models(request: web.Request) -> web.Response:
    kind = request.headers.get("x-kind", "")
    if kind == "broken":
        return web.Response(text="{not json", content_type="application/json")
    if kind == "list":
        return web.json_response([1, 2])
    data = [
        {"id": "base", "parent": None},
        {"id": "bot", "parent": "base"},
        {"id": 5, "parent": "base"},
        "junk",
    ]
    return web.json_response({"object": "list", "data": data})


@pytest.fixture
async def engine() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/load_lora_adapter", _load)
    app.router.add_post("/v1/unload_lora_adapter", _unload)
    app.router.add_get("/v1/models", _models)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


async def test_loads_and_unloads_read_every_answer(engine: str) -> None:
    async with aiohttp.ClientSession() as http:
        assert (await load_adapter(http, engine, "new", "/a")).ok
        assert (await load_adapter(http, engine, "again", "/a")).ok  # already there: done
        refused = await load_adapter(http, engine, "bad", "/a")
        assert (
            not refused.ok
            and refused.detail.startswith("HTTP 400")
            and "no adapter" in (refused.detail)
        )
        assert (await unload_adapter(http, engine, "gone")).ok  # not there: done
        failed = await unload_adapter(http, engine, "stuck")
        assert not failed.ok and failed.detail.startswith("HTTP 500")


async def test_the_model_list_names_only_adapters(engine: str) -> None:
    async with aiohttp.ClientSession() as http:
        assert await loaded_adapters(http, engine) == frozenset({"bot"})
        http.headers["x-kind"] = "broken"
        assert await loaded_adapters(http, engine) is None
        http.headers["x-kind"] = "list"  # not OpenAI's shape: unknown, not "none loaded"
        assert await loaded_adapters(http, engine) is None


async def test_no_engine_is_no_answer() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/v1"
    async with aiohttp.ClientSession() as http:
        result = await load_adapter(http, nowhere, "new", "/a", timeout_s=2)
        assert not result.ok and result.detail.startswith("no answer")
        assert not (await unload_adapter(http, nowhere, "new", timeout_s=2)).ok
        assert await loaded_adapters(http, nowhere) is None
