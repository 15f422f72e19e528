"""The web console in headless Chromium against a real gateway on loopback: an operator and a
tenant admin sign in, manage tenants and keys, see usage, split and roll back traffic; a tenant
admin cannot see another tenant; a hostile tenant name stays text; axe-core finds no
accessibility violations and the console works from the keyboard. Screenshots of every page go
to TIDEGATE_TEST_SCREENSHOTS (or tmp_path)."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from playwright.async_api import Page, expect
from typer.testing import CliRunner

from tests.integration.console_support import (
    AXE,
    MODEL,
    Console,
    console_environment,
    eventually,
)
from tests.support.gateway import ADMIN_KEY
from tidegate.cli import app as cli_app

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
    # `tidegate usage` on the same store prints the same figures.
    printed = await asyncio.to_thread(
        CliRunner().invoke,
        cli_app,
        ["usage", "--tenant", acme["id"], "--json"],
        env={"TIDEGATE_HOME": str(console.gateway.config.home)},
    )
    assert printed.exit_code == 0, printed.output
    [cli_row] = orjson.loads(printed.stdout)
    for name in ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd"):
        assert cli_row[name] == pytest.approx(row[name]), name

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


async def test_operator_splits_traffic_runs_a_rollout_and_rolls_back(console: Console) -> None:
    page = await console.page()
    await console.sign_in(page, ADMIN_KEY)
    await console.open(page, "Rollouts and traffic")
    model = page.get_by_role("region", name=f"Model {MODEL}")
    await model.get_by_label("New split").fill("stable=80, candidate=20")
    await model.get_by_role("button", name="Set split").click()
    await expect(page.get_by_text("Split set.")).to_be_visible()
    traffic = await console.api("GET", f"/admin/models/{MODEL}/traffic")
    assert traffic["weights"] == [["stable", 80], ["candidate", 20]]
    split = page.get_by_role("table", name=f"Split of {MODEL}")
    await expect(split.get_by_role("row", name="candidate 20.0%")).to_be_visible()

    # A bad split is refused with the API's own message.
    await model.get_by_label("New split").fill("stable=80, nowhere=20")
    await model.get_by_role("button", name="Set split").click()
    await expect(model.get_by_role("status")).to_contain_text("nowhere")

    await model.get_by_label("Candidate pool").select_option("candidate")
    await model.get_by_label("Steps (%)").fill("10, 50, 100")
    await model.get_by_label("Hold (s)").fill("3600")
    await model.get_by_role("button", name="Start rollout").click()
    await expect(page.get_by_text("Rollout started.")).to_be_visible()
    [rollout] = (await console.api("GET", "/admin/rollouts"))["data"]
    assert rollout["steps"] == [10, 50, 100] and rollout["state"] == "running"
    for session in range(6):
        await console.chat(ADMIN_KEY, session=f"conversation-{session}")
    panel = page.get_by_role("region", name=f"Model {MODEL}")
    await expect(panel.get_by_text("running: step 1 of 3")).to_be_visible()
    gates = panel.get_by_role("table", name="Gates")
    await expect(gates.get_by_role("row", name=re.compile("TTFT p95 ratio"))).to_contain_text(
        "1.500"
    )
    await console.shot(page, "traffic")

    await panel.get_by_role("button", name="Pause").click()
    await expect(panel.get_by_text("paused: step 1 of 3")).to_be_visible()
    assert (await console.api("GET", f"/admin/rollouts/{rollout['id']}"))["state"] == "paused"
    await panel.get_by_role("button", name="Resume").click()
    await expect(panel.get_by_text("running: step 1 of 3")).to_be_visible()

    # Rollback asks first; cancelling changes nothing.
    await panel.get_by_role("button", name="Roll back").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_contain_text("all traffic to stable")
    await dialog.get_by_role("button", name="Cancel").click()
    assert (await console.api("GET", f"/admin/models/{MODEL}/traffic"))["rollout"] is not None
    await panel.get_by_role("button", name="Roll back").click()
    await dialog.get_by_role("button", name="Confirm").click()
    await expect(page.get_by_text("Rolled back.")).to_be_visible()
    traffic = await console.api("GET", f"/admin/models/{MODEL}/traffic")
    assert traffic["rollout"] is None and traffic["shares"] in ({}, {"stable": 1.0})
    assert (await console.api("GET", f"/admin/rollouts/{rollout['id']}"))["state"] == "rolled_back"
    await expect(split.get_by_role("row", name="stable 100.0%")).to_be_visible()
    await expect(page.get_by_role("table", name="Recent rollouts")).to_contain_text("rolled_back")

    # Shadow traffic on, its summary, then off.
    await panel.get_by_label("Shadow pool").select_option("candidate")
    await panel.get_by_label("Sample (0-1)").fill("1")
    await panel.get_by_role("button", name="Mirror").click()
    await expect(page.get_by_text("Shadow set.")).to_be_visible()
    assert (await console.api("GET", f"/admin/models/{MODEL}/traffic"))["shadow"] == {
        "pool": "candidate",
        "sample": 1.0,
    }
    await panel.get_by_role("button", name="Stop shadow").click()
    await expect(page.get_by_text("Shadow stopped.")).to_be_visible()
    assert (await console.api("GET", f"/admin/models/{MODEL}/traffic"))["shadow"] is None


async def test_tenant_admin_sees_and_reaches_only_its_own_tenant(console: Console) -> None:
    acme_id, acme_admin = await tenant_with_admin(console, "acme", budgets={"daily_tokens": 5000})
    globex_id, globex_admin = await tenant_with_admin(console, "globex-secret")
    globex_key = await console.api(
        "POST", "/admin/keys", {"name": "globex-hidden-key", "tenant_id": globex_id}
    )
    await console.chat(globex_key["key"])
    acme_key = await console.api("POST", "/admin/keys", {"name": "acme-svc", "tenant_id": acme_id})
    await console.chat(acme_key["key"])
    await eventually(lambda: _has_usage(console, globex_id))
    await eventually(lambda: _has_usage(console, acme_id))

    page = await console.page()
    await console.sign_in(page, acme_admin, "Signed in as tenant admin of acme")
    # The operator's sections are not offered.
    await expect(page.get_by_role("link", name="Rollouts and traffic")).to_be_hidden()
    await expect(
        page.get_by_text("Live pool and scheduler figures are for operators")
    ).to_be_visible()
    await console.shot(page, "tenant-admin-overview")

    for section in ("Tenants and keys", "Usage and cost", "Batches and files", "Audit log"):
        await console.open(page, section)
        body = await page.locator("body").inner_text()
        for foreign in ("globex", globex_id, globex_key["id"], "ten_system"):
            assert foreign not in body, f"{section} shows {foreign}"
        await console.shot(page, f"tenant-admin-{section.split()[0].lower()}")

    # Its own tenant: keys, budget, read-only limits (PATCH is the operator's).
    await console.open(page, "Tenants and keys")
    await expect(page.get_by_role("cell", name="acme-svc", exact=True)).to_be_visible()
    await expect(page.get_by_role("form", name="Edit limits and budgets")).to_have_count(0)
    await expect(page.get_by_text("Set by the operator.")).to_be_visible()
    await expect(page.locator("meter")).to_have_attribute("max", "5000")

    # Reaching for another tenant through the page (a forged option) gets the API's 404.
    await console.open(page, "Usage and cost")
    await page.evaluate(
        """(id) => { const s = document.querySelector('select[name=tenant]');
        const o = document.createElement('option'); o.value = id; o.textContent = 'forged';
        s.append(o); s.value = id; }""",
        globex_id,
    )
    await page.get_by_role("button", name="Show").click()
    await expect(page.get_by_role("status").filter(has_text="No tenant with id")).to_be_visible()
    assert "globex" not in await page.locator("body").inner_text()

    await page.goto(f"{console.url}/console#traffic")
    await expect(page.get_by_text("only the operator manages them")).to_be_visible()

    # Signed in, the key is in no URL and no cookie (sessionStorage only, for a reload).
    assert acme_admin not in page.url and await page.context.cookies() == []
    # Signing out forgets the key: a reload asks for it again.
    await page.get_by_role("button", name="Sign out").click()
    assert await page.evaluate("sessionStorage.length") == 0
    await page.reload()
    await expect(page.get_by_label("Admin key")).to_be_visible()
    await expect(page.locator("#nav")).to_be_hidden()


async def test_sign_in_refuses_member_and_unknown_keys(console: Console) -> None:
    tenant_id, _ = await tenant_with_admin(console, "acme")
    member = await console.api("POST", "/admin/keys", {"name": "svc", "tenant_id": tenant_id})
    page = await console.page()
    await page.goto(f"{console.url}/console")
    for key, message in ((member["key"], "not an admin key"), ("tg-nope", "key")):
        await page.get_by_label("Admin key").fill(key)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#signin-error")).to_contain_text(message)
        await expect(page.locator("#nav")).to_be_hidden()
        assert await page.evaluate("sessionStorage.length") == 0
    # The key never reaches the address bar or a cookie.
    assert "tg-" not in page.url
    assert await page.context.cookies() == []


async def test_a_hostile_tenant_name_renders_as_text(console: Console) -> None:
    tenant_id, _ = await tenant_with_admin(console, HOSTILE)
    key = await console.api("POST", "/admin/keys", {"name": HOSTILE, "tenant_id": tenant_id})
    await console.chat(key["key"])
    await eventually(lambda: _has_usage(console, tenant_id))
    page = await console.page()
    await console.sign_in(page, ADMIN_KEY)
    await console.open(page, "Tenants and keys")
    await expect(page.get_by_role("button", name=f"Open tenant {HOSTILE}")).to_have_text(HOSTILE)
    await page.get_by_role("button", name=f"Open tenant {HOSTILE}").click()
    await expect(page.locator(".tenant-name")).to_have_text(HOSTILE)
    await expect(
        page.get_by_role("cell", name=HOSTILE, exact=True)
    ).to_be_visible()  # the key's name
    await console.open(page, "Usage and cost")
    await page.get_by_label("Tenant").select_option(label=HOSTILE)
    await page.get_by_role("button", name="Show").click()
    await expect(page.get_by_role("cell", name=HOSTILE, exact=True)).to_be_visible()
    await console.open(page, "Audit log")
    await expect(page.get_by_role("table", name="Audit events")).to_contain_text(HOSTILE)
    await page.wait_for_timeout(300)  # an onerror handler would have fired by now
    assert await page.locator("img").count() == 0
    assert console.dialogs == []


async def test_overview_shows_pools_and_models_live(console: Console) -> None:
    page = await console.page()
    await console.sign_in(page, ADMIN_KEY)
    await page.goto(f"{console.url}/console?poll_ms=300#overview")
    pools = page.get_by_role("table", name="Pools")
    # Both pools: one ready replica each, nothing in flight, nothing queued.
    for pool in ("stable", "candidate"):
        idle = pools.get_by_role("row", name=re.compile(rf"^{pool} 1 0 . [0-9]+ 0 0"))
        await expect(idle).to_be_visible()
    models = page.get_by_role("table", name="Models")
    await expect(models).to_contain_text("No requests yet.")
    for session in range(8):
        await console.chat(ADMIN_KEY, session=f"s{session}", stream=True)
    # The next scrapes show them without a reload: a count, TTFT percentiles, no errors.
    row = models.get_by_role("row", name=re.compile(f"^{MODEL} "))
    await expect(row).to_contain_text(re.compile(r"^chat8"))
    await expect(row.get_by_role("cell").nth(6)).to_have_text("0.0%")
    await expect(row.get_by_role("cell").nth(3)).not_to_have_text("—")
    # The charts drew something (some pixel is not transparent).
    for name in ("In flight per pool", "TTFT p95 per model (s)"):
        canvas = page.get_by_role("img", name=re.compile(re.escape(name)))
        drawn = await canvas.evaluate(
            "c => c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some(v => v > 0)"
        )
        assert drawn, name
    await console.shot(page, "overview")


async def submit_batch(console: Console, count: int, window: str = "24h") -> dict[str, Any]:
    line = {"method": "POST", "url": "/v1/chat/completions"}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    lines = [{**line, "custom_id": f"line-{n}", "body": body} for n in range(count)]
    upload = await console.http.post(
        "/v1/files",
        files={"file": ("input.jsonl", b"".join(orjson.dumps(x) + b"\n" for x in lines))},
        data={"purpose": "batch"},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert upload.status_code == 200, upload.text
    batch: dict[str, Any] = await console.api(
        "POST",
        "/v1/batches",
        {
            "input_file_id": upload.json()["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": window,
        },
    )
    return batch


async def wait_batch(console: Console, batch_id: str) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def finished() -> bool:
        found.update(await console.api("GET", f"/v1/batches/{batch_id}"))
        return found["status"] in ("completed", "expired", "failed")

    await eventually(finished, timeout_s=30)
    return found


async def test_batches_and_files_with_downloads(console: Console) -> None:
    done = await wait_batch(console, (await submit_batch(console, 3))["id"])
    assert done["status"] == "completed" and done["output_file_id"]
    # Slow answers and a 2 s window: the lines not done by then expire into an error file.
    for fake in console.fakes.values():
        fake.behaviour.first_token_delay_s = 1.0
    expired = await wait_batch(console, (await submit_batch(console, 40, "2s"))["id"])
    for fake in console.fakes.values():
        fake.behaviour.first_token_delay_s = 0.0
    assert expired["status"] == "expired" and expired["error_file_id"], expired

    page = await console.page()
    await console.sign_in(page, ADMIN_KEY)
    await console.open(page, "Batches and files")
    batches = page.get_by_role("table", name="Batches")
    row = batches.get_by_role("row", name=re.compile(done["id"]))
    await expect(row).to_contain_text("completed")
    await expect(row).to_contain_text("3 / 0 / 3")
    await expect(row.get_by_role("progressbar")).to_have_attribute("value", "3")
    late = batches.get_by_role("row", name=re.compile(expired["id"]))
    counts = expired["request_counts"]
    await expect(late).to_contain_text("expired")
    await expect(late).to_contain_text(
        f"{counts['completed']} / {counts['failed']} / {counts['total']}"
    )
    await console.shot(page, "batches")
    for where, label, file_id in (
        (row, "output", done["output_file_id"]),
        (late, "errors", expired["error_file_id"]),
    ):
        async with page.expect_download() as info:
            await where.get_by_role("button", name=f"Download {label}").click()
        download = await info.value
        saved = Path(await download.path()).read_bytes()
        served = await console.http.get(
            f"/v1/files/{file_id}/content", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        )
        assert saved == served.content and saved, label
    await expect(page.get_by_role("table", name="Files")).to_contain_text("input.jsonl")


async def run_axe(page: Page) -> list[dict[str, Any]]:
    await page.add_script_tag(path=str(AXE))
    result = await page.evaluate(
        "axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21aa',"
        " 'best-practice']}})"
    )
    violations: list[dict[str, Any]] = result["violations"]
    return [
        {"id": v["id"], "help": v["help"], "nodes": [n["html"][:120] for n in v["nodes"]]}
        for v in violations
    ]


async def test_accessibility_every_page_passes_axe(console: Console) -> None:
    _, acme_admin = await tenant_with_admin(console, "acme", budgets={"daily_tokens": 1000})
    # axe is injected as a script: this context alone lets the test bypass the page's CSP.
    page = await console.page(bypass_csp=True)
    await page.goto(f"{console.url}/console")
    assert await run_axe(page) == [], "sign-in page"
    await console.sign_in(page, ADMIN_KEY)
    for section in (
        "Overview",
        "Tenants and keys",
        "Usage and cost",
        "Rollouts and traffic",
        "Batches and files",
        "Audit log",
    ):
        await console.open(page, section)
        if section == "Tenants and keys":
            await page.get_by_role("button", name="Open tenant acme").click()
            await expect(page.locator("meter")).to_be_visible()
        assert await run_axe(page) == [], section
    # A tenant admin's pages differ (read-only limits, its own day on the overview).
    page = await console.page(bypass_csp=True)
    await console.sign_in(page, acme_admin)
    assert await run_axe(page) == [], "tenant admin: Overview"
    await console.open(page, "Tenants and keys")
    assert await run_axe(page) == [], "tenant admin: Tenants and keys"


async def test_the_console_works_from_the_keyboard(console: Console) -> None:
    page = await console.page()
    await page.goto(f"{console.url}/console")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent") == "Skip to content"
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "signin-key"
    await page.keyboard.type(ADMIN_KEY)
    await page.keyboard.press("Enter")
    await expect(page.locator("#whoami")).to_contain_text("operator")
    # Tab to the navigation, down to "Audit log", and open it with Enter.
    focused = ""
    for _ in range(12):
        await page.keyboard.press("Tab")
        focused = await page.evaluate("document.activeElement.textContent")
        if focused == "Audit log":
            break
    assert focused == "Audit log"
    await page.keyboard.press("Enter")
    await expect(page.locator("#page h1")).to_have_text("Audit log")
    await expect(page.get_by_role("link", name="Audit log")).to_have_attribute(
        "aria-current", "page"
    )
    # Every focusable control shows a focus outline.
    outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"
    # The confirm dialog closes with Escape and gives the focus back to the page.
    await console.open(page, "Rollouts and traffic")
    await page.get_by_role("button", name="Roll back").focus()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("dialog")).to_be_visible()
    assert await page.evaluate("document.activeElement.textContent") == "Cancel"
    await page.keyboard.press("Escape")
    await expect(page.get_by_role("dialog")).to_be_hidden()


async def test_audit_log_filters_and_pages(console: Console) -> None:
    acme_id, _ = await tenant_with_admin(console, "acme")
    for n in range(22):
        await console.api("POST", "/admin/keys", {"name": f"acme-key-{n:02}", "tenant_id": acme_id})
    page = await console.page()
    await console.sign_in(page, ADMIN_KEY)
    await console.open(page, "Audit log")
    events = page.get_by_role("table", name="Audit events")
    rows = events.locator("tbody tr")
    await expect(rows).to_have_count(20)
    await expect(rows.first).to_contain_text("acme-key-21")  # newest first
    await console.shot(page, "audit")
    await page.get_by_role("button", name="Next page").click()
    await expect(page.get_by_text("Page 2")).to_be_visible()
    await expect(events).not_to_contain_text("acme-key-21")
    await expect(events).to_contain_text("acme-key-01")
    await page.get_by_role("button", name="Previous page").click()
    await expect(rows.first).to_contain_text("acme-key-21")

    # By tenant (the server's filter) and by action (the page's).
    await page.get_by_label("Tenant").select_option(label="acme")
    await page.get_by_label("Action contains").fill("tenant.created")
    await page.get_by_role("button", name="Filter").click()
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("tenant.created")
    await expect(rows.first).to_contain_text("acme")
    await page.get_by_label("Action contains").fill("")
    await page.get_by_label("Per page").select_option("50")
    await page.get_by_role("button", name="Filter").click()
    await expect(rows).to_have_count(24)  # the tenant, its admin key and 22 more keys
    await expect(events).not_to_contain_text("version.registered")  # the system tenant's


async def test_the_page_modules_compute_like_prometheus_and_quote_csv(console: Console) -> None:
    page = await console.page()
    await page.goto(f"{console.url}/console")
    results = await page.evaluate(
        """async () => {
        const m = await import('/console/assets/metrics.js');
        const u = await import('/console/assets/usage.js');
        const samples = m.parse([
          '# HELP x y',
          'h_bucket{model="a",le="0.1"} 5',
          'h_bucket{model="a",le="0.5"} 10',
          'h_bucket{model="a",le="+Inf"} 10',
          't_total{tenant="say \\\\"hi\\\\", \\\\\\\\ ok"} 3',
        ].join('\\n'));
        const now = m.buckets(samples, 'h', 'model').get('a');
        const before = new Map([[0.1, 5], [0.5, 5], [Infinity, 5]]);
        return {
          p50: m.quantile(0.5, now), p95: m.quantile(0.95, now),
          since: m.quantile(0.5, now, before), none: m.quantile(0.5, before, before),
          tenant: samples[3].labels.tenant,
          csv: ['=HYPERLINK("x")', 'a,b', 'plain', 12].map(u.csvCell),
        };
    }"""
    )
    # histogram_quantile: linear inside the bucket that holds the rank.
    assert results["p50"] == pytest.approx(0.1)
    assert results["p95"] == pytest.approx(0.1 + 0.4 * 4.5 / 5)
    assert results["since"] == pytest.approx(0.1 + 0.4 * 2.5 / 5)  # only the 5 new ones
    assert results["none"] is None
    assert results["tenant"] == 'say "hi", \\ ok'
    # A formula in a tenant's value is neutralised; commas and quotes are quoted.
    assert results["csv"] == ['"\'=HYPERLINK(""x"")"', '"a,b"', "plain", "12"]
