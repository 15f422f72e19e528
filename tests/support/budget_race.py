"""The budget race: many concurrent requests from one tenant with a daily token budget (or a
tokens_per_minute limit), spread over several `tidegate up` processes that share one store and
one Redis, in front of the fake upstream. What was metered is read back from the store once the
gateways have stopped.

Used by the integration test (the limits must hold exactly) and by ``make bench-abuse``
(admitted tokens against the limit, printed). The prompts are chat text and the gateways have
no tokenizer, so the gateway reserves the prompt's upper bound (``gateway.prompt_bound``) and
the fake upstream reports fewer tokens (one per word): the gap the settle refunds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from benchmarks.budget_race import fire_together, limit_bound, metered
from tests.support.processes import AdminClient, GatewaySettings, running_cluster

MODEL = "fake-model"


@dataclass
class RaceResult:
    budget: int | None
    """The tenant's daily token budget; None: none."""
    tokens_per_minute: int | None
    requests: int
    elapsed_s: float = 0.0
    """From the first request sent to the last answer read (the tpm bucket refills meanwhile)."""
    ok: int = 0
    refused: int = 0
    other: list[tuple[int, str]] = field(default_factory=list)
    codes: set[str] = field(default_factory=set)
    """Error codes of the 429s (and of in-band stream errors)."""
    client_tokens: int = 0
    """Tokens the 200s reported to their clients (usage)."""
    metered_tokens: int = 0
    """prompt + completion tokens over the tenant's usage records."""
    records: int = 0

    @property
    def allowed(self) -> int:
        """The most the limits let through: the budget, and a full tpm bucket plus its refill
        over the race."""
        return int(limit_bound(self.budget, self.tokens_per_minute, self.elapsed_s))

    @property
    def overspend(self) -> int:
        """Tokens metered past what the limits allow (0 when they held)."""
        return max(0, self.metered_tokens - self.allowed)

    def summary(self) -> str:
        return (
            f"{self.ok} admitted, {self.refused} refused, {len(self.other)} other of "
            f"{self.requests} in {self.elapsed_s:.2f} s; metered {self.metered_tokens} tokens "
            f"of {self.allowed} allowed ({self.records} usage records), overspend "
            f"{self.overspend}"
        )


async def budget_race(
    directory: Path,
    *,
    store_url: str,
    redis_prefix: str,
    max_tokens: int | None,
    stream: bool = False,
    budget: int | None = 2000,
    tokens_per_minute: int | None = None,
    requests: int = 200,
    gateways: int = 3,
    upstream_tokens: int = 16,
    content: str = "hello world",
) -> RaceResult:
    """Start ``gateways`` gateways (their store: ``store_url``, empty or migrated; Redis keys
    under ``redis_prefix``) and a fake upstream generating ``upstream_tokens`` per answer
    (fewer when the request's max_tokens says so); create a tenant with ``budget`` daily
    tokens and ``tokens_per_minute`` (None: not that limit); fire ``requests`` chat requests
    at once, round robin over the gateways, with ``max_tokens`` (None: left out); stop
    everything and count what was metered."""
    settings = GatewaySettings(
        store_url=store_url, redis_prefix=redis_prefix, wal_dir=directory / "wal"
    )
    assert budget is not None or tokens_per_minute is not None, "race against some limit"
    result = RaceResult(budget=budget, tokens_per_minute=tokens_per_minute, requests=requests)
    tenant_settings: dict[str, Any] = {}
    if budget is not None:
        tenant_settings["budgets"] = {"daily_tokens": budget}
    if tokens_per_minute is not None:
        tenant_settings["limits"] = {"tokens_per_minute": tokens_per_minute}
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": content}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    async with running_cluster(
        directory, settings, gateways=gateways, tokens=upstream_tokens
    ) as cluster:
        async with aiohttp.ClientSession() as http:
            tenant_id, key = await AdminClient(http, cluster.gateways[0].url).tenant_with_key(
                "racer", tenant_settings
            )
        urls = [g.url for g in cluster.gateways]
        headers = {"Authorization": f"Bearer {key}"}
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=60)
        ) as http:

            async def one(index: int) -> None:
                url = urls[index % len(urls)] + "/v1/chat/completions"
                async with http.post(url, json=body, headers=headers) as response:
                    raw = await response.read()
                    _tally(result, response.status, raw, stream=stream)

            result.elapsed_s = await fire_together(requests, one)
    # The gateways stopped cleanly, so every usage record is in the store now.
    result.records, result.metered_tokens = await metered(store_url, tenant_id)
    return result


def _tally(result: RaceResult, status: int, raw: bytes, *, stream: bool) -> None:
    if status == 429:
        result.refused += 1
        result.codes.add(str(orjson.loads(raw)["error"]["code"]))
        return
    if status != 200:
        result.other.append((status, raw.decode(errors="replace")[:300]))
        return
    result.ok += 1
    if not stream:
        usage = orjson.loads(raw)["usage"]
        result.client_tokens += usage["prompt_tokens"] + usage["completion_tokens"]
        return
    for event in raw.split(b"\n\n"):
        data = event.removeprefix(b"data: ")
        if not data or data == b"[DONE]" or not event.startswith(b"data: "):
            continue
        payload = orjson.loads(data)
        if "error" in payload:
            result.codes.add(str(payload["error"].get("code")))
        usage = payload.get("usage")
        if usage:
            result.client_tokens += usage["prompt_tokens"] + usage["completion_tokens"]
