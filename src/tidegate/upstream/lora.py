"""vLLM's runtime LoRA endpoints and what its ``GET /v1/models`` says of loaded adapters.

vLLM serves them when started with ``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING``:
``POST /v1/load_lora_adapter {"lora_name", "lora_path"}`` and ``POST /v1/unload_lora_adapter
{"lora_name"}``; its model list shows each registered adapter as a card whose ``parent`` is the
base model. Every call here is bounded by ``timeout_s`` and never raises for the engine's
answer: the adapter sync logs what failed and tries again on its next pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
import orjson

from tidegate.upstream.model_cards import model_cards


@dataclass(frozen=True, slots=True)
class LoraResult:
    ok: bool
    detail: str
    """The engine's answer (trimmed), or why there was none."""


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


async def _post(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, str],
    *,
    api_key: str | None,
    timeout_s: float,
) -> tuple[int, str]:
    async with session.post(
        url,
        data=orjson.dumps(body),
        headers=_headers(api_key),
        timeout=aiohttp.ClientTimeout(total=timeout_s),
    ) as response:
        return response.status, (await response.text(errors="replace"))[:300]


async def load_adapter(
    session: aiohttp.ClientSession,
    base_url: str,
    name: str,
    path: str,
    *,
    api_key: str | None = None,
    timeout_s: float = 60.0,
) -> LoraResult:
    """Register adapter ``name`` from ``path`` (a directory or hub id) on the engine at
    ``base_url`` (ending in /v1). An engine that already has it answers 400 "already been
    loaded": that is success too."""
    url = f"{base_url.rstrip('/')}/load_lora_adapter"
    try:
        status, text = await _post(
            session,
            url,
            {"lora_name": name, "lora_path": path},
            api_key=api_key,
            timeout_s=timeout_s,
        )
    except (aiohttp.ClientError, TimeoutError) as exc:
        return LoraResult(False, f"no answer: {exc!r}"[:300])
    if status == 200 or "already been loaded" in text:
        return LoraResult(True, text)
    return LoraResult(False, f"HTTP {status}: {text}")


async def unload_adapter(
    session: aiohttp.ClientSession,
    base_url: str,
    name: str,
    *,
    api_key: str | None = None,
    timeout_s: float = 30.0,
) -> LoraResult:
    """Unregister adapter ``name``; an engine that does not have it (404, or 400 "not found")
    counts as done."""
    url = f"{base_url.rstrip('/')}/unload_lora_adapter"
    try:
        status, text = await _post(
            session, url, {"lora_name": name}, api_key=api_key, timeout_s=timeout_s
        )
    except (aiohttp.ClientError, TimeoutError) as exc:
        return LoraResult(False, f"no answer: {exc!r}"[:300])
    if status in (200, 404) or "not found" in text.lower():
        return LoraResult(True, text)
    return LoraResult(False, f"HTTP {status}: {text}")


async def loaded_adapters(
    session: aiohttp.ClientSession,
    base_url: str,
    *,
    api_key: str | None = None,
    timeout_s: float = 2.0,
) -> frozenset[str] | None:
    """The adapter names the engine lists (cards with a ``parent``); None without an answer."""
    cards = await model_cards(session, base_url, api_key=api_key, timeout_s=timeout_s)
    if cards is None:
        return None
    return frozenset(
        card["id"] for card in cards if isinstance(card.get("id"), str) and card.get("parent")
    )
