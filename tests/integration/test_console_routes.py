"""The console's page and assets over real HTTP: security headers on every answer, only the
bundled files, nothing external in them, and /console gone when console.enabled is false."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import run_gateway
from tidegate.console.assets import load_assets
from tidegate_testing.fake_server import FakeUpstream

ASSETS = sorted(name for name in load_assets() if name != "index.html")


def assert_locked_down(response: httpx.Response) -> None:
    csp = response.headers["content-security-policy"]
    directives = dict(part.strip().split(" ", 1) for part in csp.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"  # no 'unsafe-inline', no 'unsafe-eval'
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'" and directives["base-uri"] == "'none'"
    assert "unsafe" not in csp and "http" not in csp and "*" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "set-cookie" not in response.headers


async def test_page_and_assets_carry_a_strict_policy(tmp_path: Path, fake: FakeUpstream) -> None:
    async with run_gateway(tmp_path, upstreams=[fake]) as gateway:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            page = await http.get("/console")
            assert page.status_code == 200
            assert page.headers["content-type"] == "text/html; charset=utf-8"
            assert_locked_down(page)
            assert "<script>" not in page.text and "onclick" not in page.text  # nothing inline
            assert (await http.get("/console/")).text == page.text
            referenced = set(re.findall(r'(?:src|href)="/console/assets/([^"]+)"', page.text))
            assert referenced and referenced <= set(ASSETS)
            for name in ASSETS:
                asset = await http.get(f"/console/assets/{name}")
                assert asset.status_code == 200, name
                assert_locked_down(asset)
                kind = "text/javascript" if name.endswith(".js") else "text/css"
                assert asset.headers["content-type"] == f"{kind}; charset=utf-8"
                # Works offline: no fonts, scripts or charts from anywhere else.
                assert not re.search(r"https?://", asset.text), name
                assert "innerHTML" not in asset.text and "insertAdjacentHTML" not in asset.text
                assert "document.cookie" not in asset.text and "localStorage" not in asset.text


@pytest.mark.parametrize(
    "path",
    [
        "/console/assets/nope.js",
        "/console/assets/index.html",
        "/console/assets/..%2F__init__.py",
        "/console/assets/assets.py",
    ],
)
async def test_only_the_bundled_files_are_served(
    tmp_path: Path, fake: FakeUpstream, path: str
) -> None:
    async with run_gateway(tmp_path, upstreams=[fake]) as gateway:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            response = await http.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


async def test_disabled_console_is_not_served(tmp_path: Path, fake: FakeUpstream) -> None:
    async with run_gateway(
        tmp_path, upstreams=[fake], sections={"console": {"enabled": False}}
    ) as gateway:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            for path in ("/console", "/console/", "/console/assets/main.js"):
                response = await http.get(path)
                assert response.status_code == 404, path
                assert response.json()["error"]["type"] == "not_found_error"
            assert (await http.get("/healthz")).status_code == 200  # the API is unchanged
