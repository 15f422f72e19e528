"""What an OpenAI-compatible engine says about the models it serves (``GET /v1/models``)."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson


async def model_cards(
    session: aiohttp.ClientSession,
    base_url: str,
    *,
    api_key: str | None = None,
    timeout_s: float = 2.0,
) -> list[dict[str, Any]] | None:
    """The model cards ``GET {base_url}/models`` lists (``base_url`` ends in /v1), only those
    that are objects; None when the server does not answer with a list."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    try:
        async with session.get(
            f"{base_url.rstrip('/')}/models",
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as response:
            if response.status != 200:
                return None
            body: Any = orjson.loads(await response.read())
    except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
        return None
    cards = body.get("data") if isinstance(body, dict) else None
    if not isinstance(cards, list):
        return None
    return [card for card in cards if isinstance(card, dict)]


async def max_model_len(
    session: aiohttp.ClientSession,
    base_url: str,
    model: str,
    *,
    api_key: str | None = None,
    timeout_s: float = 2.0,
) -> int | None:
    """The ``max_model_len`` vLLM lists for ``model`` at ``{base_url}/models`` (``base_url``
    ends in /v1). None when the server does not answer, does not list the model, or lists no
    length for it (SGLang, TGI and OpenAI say nothing of it)."""
    cards = await model_cards(session, base_url, api_key=api_key, timeout_s=timeout_s)
    for card in cards or ():
        if card.get("id") == model:
            length = card.get("max_model_len")
            # bool is an int: a server saying `true` has not told us a length.
            if isinstance(length, int) and not isinstance(length, bool) and length > 0:
                return length
            return None
    return None
