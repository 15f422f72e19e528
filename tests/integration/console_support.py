"""A gateway with two pools of one model behind the web console, and Playwright driving the
Debian chromium against it (no `playwright install`, no network).

Without chromium the tests skip, unless TIDEGATE_TEST_REQUIRE_BROWSER=1 (CI) makes that a
failure. Screenshots go to TIDEGATE_TEST_SCREENSHOTS (a directory) or the test's tmp_path.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from tests.support.gateway import ADMIN_KEY, RunningGateway, auth, free_port, serve
from tidegate.config import Config
from tidegate_testing.fake_server import FakeUpstream

MODEL = "chat"
POOLS = ("stable", "candidate")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
AXE = Path(__file__).parents[1] / "data" / "axe.min.js"
# Generous on a loaded CI machine: each wait still ends as soon as the page is there.
expect.set_options(timeout=15_000)


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        reason = "chromium is not installed (apt-get install -y chromium fonts-dejavu-core)"
        if os.environ.get("TIDEGATE_TEST_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{reason} but TIDEGATE_TEST_REQUIRE_BROWSER=1")
        pytest.skip(f"{reason}; set TIDEGATE_TEST_REQUIRE_BROWSER=1 to fail instead")
    return found


@dataclass
class Console:
    """The running gateway, an operator HTTP client, and the browser."""

    gateway: RunningGateway
    http: httpx.AsyncClient
    browser: Browser
    shots: Path
    fakes: dict[str, FakeUpstream]
    dialogs: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.gateway.url

    async def api(self, method: str, path: str, body: Any = None, key: str = ADMIN_KEY) -> Any:
        response = await self.http.request(method, path, json=body, headers=auth(key))
        assert response.status_code in (200, 201), response.text
        return response.json()

    async def page(self, **options: Any) -> Page:
        """A fresh browser context (its own sessionStorage) with every dialog, script error
        and request to anywhere but the gateway recorded."""
        context: BrowserContext = await self.browser.new_context(
            viewport={"width": 1280, "height": 900}, accept_downloads=True, **options
        )
        context.set_default_timeout(30_000)
        page = await context.new_page()

        async def on_dialog(dialog: Any) -> None:
            self.dialogs.append(dialog.message)
            await dialog.dismiss()

        page.on("dialog", on_dialog)
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))

        def on_request(request: Any) -> None:
            if not request.url.startswith(self.url + "/") and not request.url.startswith("blob:"):
                self.foreign_requests.append(request.url)

        page.on("request", on_request)
        return page

    async def sign_in(self, page: Page, key: str, expect_text: str = "Signed in") -> None:
        await page.goto(f"{self.url}/console")
        await page.get_by_label("Admin key").fill(key)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#whoami")).to_contain_text(expect_text)

    async def open(self, page: Page, section: str) -> None:
        await page.get_by_role("link", name=section).click()
        await expect(page.locator("#page h1")).to_have_text(section)
        await expect(page.locator("#page")).to_have_attribute("data-ready", "true")

    async def shot(self, page: Page, name: str) -> Path:
        path = self.shots / f"console-{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        return path

    async def chat(self, key: str, session: str = "s", stream: bool = False) -> httpx.Response:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}]}
        response = await self.http.post(
            "/v1/chat/completions",
            json={**body, "stream": stream},
            headers={**auth(key), "x-tidegate-session-id": session},
        )
        assert response.status_code == 200, response.text
        return response

    def check_clean(self) -> None:
        assert self.dialogs == [], f"a dialog fired: {self.dialogs}"
        assert self.page_errors == [], f"the page threw: {self.page_errors}"
        assert self.foreign_requests == [], f"the page went elsewhere: {self.foreign_requests}"


def config(home: Path, fakes: dict[str, FakeUpstream]) -> Config:
    return Config(
        home=home,
        admin_key=ADMIN_KEY,
        server={"port": free_port(), "idle_timeout_s": 5.0},
        engines={"replicas": 0},
        upstreams=[
            {"url": fake.base_url, "model": MODEL, "pool": pool, "upstream_model": fake.model}
            for pool, fake in fakes.items()
        ],
        rollouts={"sync_interval_s": 0.2, "controller_interval_s": 0.2},
        metering={"flush_interval_s": 0.05},
        batch={"poll_interval_s": 0.05, "lease_s": 5},
        pricing={MODEL: {"input_per_million": 2000.0, "output_per_million": 6000.0}},
    )


async def console_environment(tmp_path: Path) -> AsyncIterator[Console]:
    executable = chromium()
    shots = Path(os.environ.get("TIDEGATE_TEST_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    async with AsyncExitStack() as stack:
        fakes: dict[str, FakeUpstream] = {}
        for pool in POOLS:
            fake = FakeUpstream(model=f"fake-{pool}")
            await fake.start()
            stack.push_async_callback(fake.stop)
            fakes[pool] = fake
        gateway = await stack.enter_async_context(serve(config(tmp_path / "home", fakes)))
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=gateway.url, timeout=30))
        playwright = await stack.enter_async_context(async_playwright())
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        stack.push_async_callback(browser.close)
        yield Console(gateway, http, browser, shots, fakes)


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
