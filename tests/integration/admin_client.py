"""A small HTTP client for the /admin API tests, and a gateway fixture on both stores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.gateway import ADMIN_KEY, RunningGateway, run_gateway
from tidegate_testing.fake_server import FakeUpstream


class Admin:
    """Calls the gateway as one key; every answer is (status, JSON body)."""

    def __init__(self, http: httpx.AsyncClient, key: str) -> None:
        self._http = http
        self.key = key

    async def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, **params: str
    ) -> tuple[int, dict[str, Any]]:
        response = await self._http.request(
            method,
            path,
            json=body,
            params=params or None,
            headers={"Authorization": f"Bearer {self.key}"} if self.key else {},
        )
        data: dict[str, Any] = response.json()
        return response.status_code, data

    async def ok(
        self, method: str, path: str, body: dict[str, Any] | None = None, **params: str
    ) -> dict[str, Any]:
        status, data = await self.call(method, path, body, **params)
        assert status in (200, 201), data
        return data

    def as_key(self, key: str) -> Admin:
        return Admin(self._http, key)


@pytest.fixture
async def admin_gateway(
    tmp_path: Path, fake: FakeUpstream, store_url: str
) -> AsyncIterator[RunningGateway]:
    async with run_gateway(tmp_path, upstreams=[fake], store_url=store_url) as running:
        yield running


@pytest.fixture
async def operator(admin_gateway: RunningGateway) -> AsyncIterator[Admin]:
    async with httpx.AsyncClient(base_url=admin_gateway.url, timeout=30) as http:
        yield Admin(http, ADMIN_KEY)
