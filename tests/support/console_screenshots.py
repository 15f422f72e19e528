"""The README's console screenshots, from the real page: a gateway in front of two fake pools
with live streaming traffic from two tenants, a traffic split with a running rollout and shadow
traffic, and a finished batch; every console section captured in headless Chromium.

    .venv/bin/python -m tests.support.console_screenshots docs/console
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import orjson
from PIL import Image

from tests.integration.console_support import MODEL, Console, console_environment
from tests.support.gateway import ADMIN_KEY, auth

SECTIONS = (
    "Overview",
    "Tenants and keys",
    "Usage and cost",
    "Rollouts and traffic",
    "Batches and files",
    "Audit log",
)


async def traffic(console: Console, key: str, stop: asyncio.Event, session: str) -> None:
    while not stop.is_set():
        await console.chat(key, session=session, stream=True)


async def batch(console: Console) -> None:
    line = {"method": "POST", "url": "/v1/chat/completions"}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "summarise"}]}
    lines = [{**line, "custom_id": f"doc-{n}", "body": body} for n in range(20)]
    upload = await console.http.post(
        "/v1/files",
        files={"file": ("nightly.jsonl", b"".join(orjson.dumps(x) + b"\n" for x in lines))},
        data={"purpose": "batch"},
        headers=auth(ADMIN_KEY),
    )
    created = {"input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions"}
    await console.api("POST", "/v1/batches", {**created, "completion_window": "24h"})


async def capture(out: Path) -> None:
    with tempfile.TemporaryDirectory() as home:
        async for console in console_environment(Path(home)):
            for fake in console.fakes.values():
                fake.behaviour.first_token_delay_s = 0.15
                fake.behaviour.token_delay_s = 0.03
            keys = []
            for name, tier, settings in (
                ("acme", "interactive", {"budgets": {"daily_tokens": 20000}}),
                ("globex", "batch", {"budgets": {"daily_cost_usd": 200.0}}),
            ):
                tenant = await console.api(
                    "POST", "/admin/tenants", {"name": name, "tier": tier, "settings": settings}
                )
                for key_name in ("svc", "admin"):
                    role = "admin" if key_name == "admin" else "member"
                    body = {"name": f"{name}-{key_name}", "role": role, "tenant_id": tenant["id"]}
                    keys.append((await console.api("POST", "/admin/keys", body))["key"])
            path = f"/admin/models/{MODEL}/traffic"
            await console.api("PUT", path, {"shadow": {"pool": "candidate", "sample": 0.2}})
            rollout = {"model": MODEL, "candidate_pool": "candidate", "steps": [10, 50, 100]}
            await console.api("POST", "/admin/rollouts", {**rollout, "hold_s": 600})
            await batch(console)
            stop = asyncio.Event()
            workers = [
                asyncio.create_task(traffic(console, keys[i % 2 * 2], stop, f"s{i}"))
                for i in range(6)
            ]
            page = await console.page()
            await console.sign_in(page, ADMIN_KEY)
            await page.goto(f"{console.url}/console?poll_ms=1000#overview")
            await page.wait_for_timeout(12_000)  # a dozen scrapes for the charts
            for section in SECTIONS:
                if section != "Overview":
                    await console.open(page, section)
                if section == "Tenants and keys":
                    await page.get_by_role("button", name="Open tenant acme").click()
                    await page.locator("meter").first.wait_for()
                name = section.split()[0].lower()
                shot = out / f"{name}.png"
                await page.screenshot(path=str(shot), full_page=section == "Rollouts and traffic")
                # 256 colours: a fraction of the size, nothing lost on a page of flat colours.
                Image.open(shot).convert("RGB").quantize(256).save(shot, optimize=True)
            stop.set()
            await asyncio.gather(*workers)


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/console")
    target.mkdir(parents=True, exist_ok=True)
    asyncio.run(capture(target))
