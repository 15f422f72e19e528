"""The "protected" tidegate targets: every protection of the request path switched on.

A tenant gets rate limits, a concurrency limit and budgets far above what the benchmark can
spend (so each is checked and charged on every request, never refused), the upstream gets the
bundled model's tokenizer (so every prompt is counted with the chat template) and a context
length, and usage metering runs as always. The same setup runs with the in-process limit store
and with Redis.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import yaml

from tidegate.config import load_config

_HUGE = 10**12
TENANT_SETTINGS = {
    "limits": {
        "requests_per_minute": 10**9,
        "tokens_per_minute": _HUGE,
        "concurrent_requests": 10**6,
    },
    "budgets": {"daily_tokens": _HUGE, "monthly_tokens": _HUGE, "daily_cost_usd": 10.0**9},
    "max_prompt_tokens": 2048,
    "default_max_tokens": 64,
}


def bundled_tokenizer_dir() -> Path | None:
    """The prepared bundled model, when `tidegate model prepare` has run on this machine."""
    path = load_config().models_dir / "smollm2-135m-instruct"
    return path if (path / "tokenizer.json").is_file() else None


def write_config(
    path: Path, *, upstream_base_url: str, model: str, limits_backend: str, redis_prefix: str
) -> None:
    tokenizer = bundled_tokenizer_dir()
    upstream: dict[str, object] = {"url": upstream_base_url, "model": model}
    if tokenizer is not None:
        upstream.update(tokenizer=str(tokenizer), context_length=8192)
    config = {
        "upstreams": [upstream],
        "limits": {"backend": limits_backend, "key_prefix": redis_prefix},
        "pricing": {model: {"input_per_million": 0.1, "output_per_million": 0.2}},
    }
    path.write_text(yaml.safe_dump(config))


def _post(url: str, admin_key: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {admin_key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        data: dict[str, object] = json.loads(response.read())
        return data


def provision_tenant(gateway_origin: str, admin_key: str) -> str:
    """Create the benchmark tenant and a member key; returns the key."""
    tenant = _post(
        f"{gateway_origin}/admin/tenants",
        admin_key,
        {"name": "bench", "tier": "interactive", "settings": TENANT_SETTINGS},
    )
    key = _post(
        f"{gateway_origin}/admin/keys",
        admin_key,
        {"name": "bench", "role": "member", "tenant_id": tenant["id"]},
    )
    plaintext = key.get("key")
    assert isinstance(plaintext, str), "POST /admin/keys returned no key"
    return plaintext
