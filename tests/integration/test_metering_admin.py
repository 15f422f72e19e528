"""GET /admin/usage and /admin/usage/records in process through an ASGI client, with real keys
and tenants in the store (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.applications import Starlette

from tests.support.usage_events import usage_event
from tidegate.api.admin_usage import build_usage_routes
from tidegate.api.routes import tidegate_error_handler
from tidegate.errors import TidegateError
from tidegate.metering import UsageMeter, UsageQueries
from tidegate.store.db import transaction
from tidegate.store.models import SYSTEM_TENANT_ID, Tenant
from tidegate.tenancy.keys import KeyService
from tidegate.tenancy.tenants import TenantService

Sessions = async_sessionmaker[AsyncSession]


@dataclass(frozen=True)
class Services:
    """The services these routes read; the gateway passes its ApiServices instead."""

    keys: KeyService
    tenants: TenantService
    usage: UsageQueries


@dataclass(frozen=True)
class Slot:
    services: Services

    def get(self) -> Services:
        return self.services


@dataclass(frozen=True)
class Keys:
    operator: str
    tenant_admin: str
    tenant_member: str


@pytest.fixture
async def keys(sessions: Sessions, tmp_path: Path) -> Keys:
    now = datetime.now(UTC)
    async with transaction(sessions, "create tenants") as session:
        for tenant_id in ("ten_a", "ten_b"):
            session.add(
                Tenant(id=tenant_id, name=tenant_id, tier="interactive", settings={},
                       created_at=now, updated_at=now)
            )  # fmt: skip
    service = KeyService(sessions=sessions, cache_ttl_s=60)
    _, operator = await service.create("operator", "admin", SYSTEM_TENANT_ID)
    _, tenant_admin = await service.create("a admin", "admin", "ten_a")
    _, member = await service.create("a member", "member", "ten_a")
    meter = UsageMeter(
        sessions=sessions, wal_dir=tmp_path / "wal", flush_interval_s=60, batch_size=50
    )
    await meter.start()
    for i in range(3):
        meter.record(usage_event(f"a{i}", tenant_id="ten_a", model=f"m{i % 2}"))
    meter.record(usage_event("b0", tenant_id="ten_b", cost_usd=2.0))
    await meter.stop()
    return Keys(operator, tenant_admin, member)


@pytest.fixture
async def client(sessions: Sessions) -> AsyncIterator[httpx.AsyncClient]:
    slot = Slot(
        Services(
            KeyService(sessions=sessions, cache_ttl_s=60),
            TenantService(sessions=sessions),
            UsageQueries(sessions=sessions),
        )
    )
    app = Starlette(
        routes=build_usage_routes(slot),
        exception_handlers={TidegateError: tidegate_error_handler},
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tidegate") as http:
        yield http


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_the_operator_sees_every_tenant(client: httpx.AsyncClient, keys: Keys) -> None:
    response = await client.get("/admin/usage", headers=auth(keys.operator))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "usage.rollup" and body["group_by"] == "day"
    assert [(r["tenant_id"], r["day"], r["requests"]) for r in body["data"]] == [
        ("ten_a", "2026-11-03", 3),
        ("ten_b", "2026-11-03", 1),
    ]
    b_only = await client.get(
        "/admin/usage",
        params={"tenant_id": "ten_b", "group_by": "model", "since": "2026-11-03"},
        headers=auth(keys.operator),
    )
    (row,) = b_only.json()["data"]
    assert row == {
        "tenant_id": "ten_b",
        "model": "fake-model",
        "requests": 1,
        "prompt_tokens": 10,
        "cached_tokens": 2,
        "completion_tokens": 5,
        "total_tokens": 15,
        "cost_usd": 2.0,
    }
    unknown = await client.get(
        "/admin/usage", params={"tenant_id": "ten_zz"}, headers=auth(keys.operator)
    )
    assert unknown.status_code == 404


async def test_a_tenant_admin_sees_only_its_tenant(client: httpx.AsyncClient, keys: Keys) -> None:
    own = await client.get("/admin/usage", headers=auth(keys.tenant_admin))
    assert [r["tenant_id"] for r in own.json()["data"]] == ["ten_a"]
    by_name = await client.get(
        "/admin/usage", params={"tenant_id": "ten_a"}, headers=auth(keys.tenant_admin)
    )
    assert by_name.json()["data"] == own.json()["data"]
    records = await client.get("/admin/usage/records", headers=auth(keys.tenant_admin))
    assert [r["request_id"] for r in records.json()["data"]] == ["a0", "a1", "a2"]

    for path in ("/admin/usage", "/admin/usage/records"):
        foreign = await client.get(
            path, params={"tenant_id": "ten_b"}, headers=auth(keys.tenant_admin)
        )
        unknown = await client.get(
            path, params={"tenant_id": "ten_c"}, headers=auth(keys.tenant_admin)
        )
        # The same answer as for a tenant that does not exist, apart from the id it echoes.
        assert foreign.status_code == unknown.status_code == 404
        assert foreign.text.replace("ten_b", "ID") == unknown.text.replace("ten_c", "ID")
        assert foreign.headers == unknown.headers


async def test_members_and_strangers_are_refused(client: httpx.AsyncClient, keys: Keys) -> None:
    member = await client.get("/admin/usage", headers=auth(keys.tenant_member))
    assert member.status_code == 403
    nobody = await client.get("/admin/usage/records")
    assert nobody.status_code == 401


async def test_records_pages_and_bad_parameters(client: httpx.AsyncClient, keys: Keys) -> None:
    seen: list[str] = []
    params: dict[str, str] = {"limit": "2"}
    while True:
        page = (
            await client.get("/admin/usage/records", params=params, headers=auth(keys.operator))
        ).json()
        seen += [r["request_id"] for r in page["data"]]
        if not page["has_more"]:
            break
        params["after"] = page["next_cursor"]
    assert seen == ["a0", "a1", "a2", "b0"]
    first = page["data"][-1]
    assert first["created_at"] == "2026-11-03T12:00:00+00:00" and first["cost_usd"] == 2.0

    for path, query in (
        ("/admin/usage", {"group_by": "week"}),
        ("/admin/usage", {"since": "soon"}),
        ("/admin/usage/records", {"limit": "many"}),
        ("/admin/usage/records", {"limit": "5000"}),
        ("/admin/usage/records", {"after": "garbage"}),
    ):
        bad = await client.get(path, params=query, headers=auth(keys.operator))
        assert bad.status_code == 400, (path, query, bad.text)
        assert bad.json()["error"]["param"] == next(iter(query))
