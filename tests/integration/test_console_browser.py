"""The web console in headless Chromium against a real gateway on loopback: an operator and a
tenant admin sign in, manage tenants and keys, see usage, split and roll back traffic; a tenant
admin cannot see another tenant; a hostile tenant name stays text; axe-core finds no
accessibility violations and the console works from the keyboard. Screenshots of every page go
to TIDEGATE_TEST_SCREENSHOTS (or tmp_path)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from tests.integration.console_support import (
    MODEL,
    Console,
    console_environment,
    eventually,
)
from tests.support.gateway import ADMIN_KEY

HOSTILE = "<img src=x onerror=alert(1)>"
KEY_PATTERN = re.compile(r"^tg-[A-Za-z0-9_-]{20,}$")


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console]:
    async for environment in console_environment(tmp_path):
        yield environment
        environment.check_clean()


async def tenant_with_admin(console: Console, name: str, **settings: Any) -> tuple[str, str]:
    tenant = await console.api("POST", "/admin/tenants", {"name": name, "settings": settings})
    admin = await console.api(
        "POST", "/admin/keys", {"name": f"{name} admin", "role": "admin", "tenant_id": tenant["id"]}
    )
    return tenant["id"], admin["key"]


async def usage_rows(console: Console, tenant_id: str) -> list[dict[str, Any]]:
    rollup = await console.api("GET", f"/admin/usage?tenant_id={tenant_id}&group_by=day")
    rows: list[dict[str, Any]] = rollup["data"]
    return rows


async def test_operator_creates_a_tenant_and_a_key_and_sees_its_usage(console: Console) -> None:
    page = await console.page(permissions=["clipboard-read", "clipboard-write"])
    await console.sign_in(page, ADMIN_KEY, "Signed in as the operator")
    await console.open(page, "Tenants and keys")

    create = page.get_by_role("form", name="Create a tenant")
    await create.get_by_label("Tenant name").fill("acme")
    await create.get_by_label("Tier").select_option("interactive")
    await create.get_by_label("Requests per minute").fill("600")
    await create.get_by_label("Daily tokens").fill("100000")
    await create.get_by_role("button", name="Create tenant").click()
    await expect(page.get_by_text("Created acme")).to_be_visible()
    tenants = (await console.api("GET", "/admin/tenants?limit=100"))["data"]
    acme = next(t for t in tenants if t["name"] == "acme")
    assert acme["settings"]["limits"]["requests_per_minute"] == 600
    assert acme["settings"]["budgets"]["daily_tokens"] == 100000

    # The API's validation, and its message, in the page.
    await page.get_by_role("button", name="Open tenant acme").click()
    edit = page.get_by_role("form", name="Edit limits and budgets")
    await edit.get_by_label("Tokens per minute").fill("-5")
    await edit.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("status").filter(has_text="tokens_per_minute")).to_be_visible()

    keys = page.get_by_role("form", name="Create a key")
    await keys.get_by_label("Key name").fill("acme-svc")
    await keys.get_by_role("button", name="Create key").click()
    shown = page.locator(".new-key-value")
    await expect(shown).to_have_text(KEY_PATTERN)
    key = (await shown.text_content()) or ""
    await page.get_by_role("button", name="Copy key").click()
    await expect(page.get_by_text("Copied.")).to_be_visible()
    assert await page.evaluate("navigator.clipboard.readText()") == key
    await console.shot(page, "tenants")
    await page.get_by_role("button", name="Done").click()
    await expect(page.locator(".new-key-value")).to_have_count(0)  # shown once
    assert key not in (await page.content())

    await console.chat(key)
    await eventually(lambda: _has_usage(console, acme["id"]))
    [row] = await usage_rows(console, acme["id"])

    # The budget bar shows today's use against the daily budget.
    await page.get_by_role("button", name="Open tenant acme").click()
    meter = page.get_by_label("Daily tokens", exact=True).and_(page.locator("meter"))
    await expect(meter).to_have_attribute("value", str(row["total_tokens"]))
    await expect(meter).to_have_attribute("max", "100000")

    await console.open(page, "Usage and cost")
    await page.get_by_label("Tenant").select_option(label="acme")
    await page.get_by_role("button", name="Show").click()
    cells = page.locator("#page table tbody tr").first.locator("td")
    await expect(cells.nth(0)).to_have_text("acme")
    await expect(cells.nth(1)).to_have_text(row["day"])
    await expect(cells.nth(2)).to_have_text(f"{row['requests']:,}")
    await expect(cells.nth(6)).to_have_text(f"{row['total_tokens']:,}")
    await expect(cells.nth(7)).to_have_text(f"{row['cost_usd']:.4f}")
    await console.shot(page, "usage")

    async with page.expect_download() as download_info:
        await page.get_by_role("button", name="Export CSV").click()
    download = await download_info.value
    exported = list(csv.DictReader(io.StringIO(Path(await download.path()).read_text())))
    assert [(r["tenant_id"], r["tenant"], r["day"]) for r in exported] == [
        (acme["id"], "acme", row["day"])
    ]
    for name in ("requests", "prompt_tokens", "cached_tokens", "completion_tokens", "total_tokens"):
        assert int(exported[0][name]) == row[name], name
    assert float(exported[0]["cost_usd"]) == pytest.approx(row["cost_usd"]) and row["cost_usd"] > 0

    # Revoking the key from the page stops it.
    await console.open(page, "Tenants and keys")
    await page.get_by_role("button", name="Open tenant acme").click()
    await page.get_by_role("button", name="Revoke key acme-svc").click()
    await page.get_by_role("button", name="Confirm").click()
    await expect(page.get_by_text("Revoked acme-svc.")).to_be_visible()
    refused = await console.http.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert refused.status_code == 401


async def _has_usage(console: Console, tenant_id: str) -> bool:
    return bool(await usage_rows(console, tenant_id))
