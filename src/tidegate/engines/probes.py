"""Readiness and liveness probes against a vLLM server's HTTP API."""

from __future__ import annotations

import aiohttp


async def is_healthy(session: aiohttp.ClientSession, root_url: str) -> bool:
    """GET /health answers 200."""
    try:
        async with session.get(f"{root_url}/health") as resp:
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def serves_model(session: aiohttp.ClientSession, root_url: str, model: str) -> bool:
    """GET /v1/models lists ``model``: the server is up *and* has loaded what we asked for."""
    try:
        async with session.get(f"{root_url}/v1/models") as resp:
            if resp.status != 200:
                return False
            body = await resp.json()
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return False
    data = body.get("data") if isinstance(body, dict) else None
    return isinstance(data, list) and any(
        isinstance(item, dict) and item.get("id") == model for item in data
    )


async def is_ready(session: aiohttp.ClientSession, root_url: str, model: str) -> bool:
    return await is_healthy(session, root_url) and await serves_model(session, root_url, model)
