"""A tenant's admin can only see and touch its own tenant: every /admin endpoint that takes an
id answers another tenant's id exactly like a missing one (same status, same body but for the
id echoed). Over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from tests.integration.admin_client import Admin, admin_gateway, operator

__all__ = ["admin_gateway", "operator"]  # fixtures used by name

MISSING_TENANT = "ten_" + "0" * 24
MISSING_KEY = "key_" + "0" * 24
Answer = tuple[int, dict[str, Any]]


@dataclass
class World:
    a_admin: Admin
    tenant_a: str
    tenant_b: str
    b_key_ids: list[str]
    b_plaintexts: list[str]


@pytest.fixture
async def world(operator: Admin) -> World:
    tenant_a = (await operator.ok("POST", "/admin/tenants", {"name": "a"}))["id"]
    tenant_b = (await operator.ok("POST", "/admin/tenants", {"name": "b"}))["id"]
    a_admin = await operator.ok(
        "POST", "/admin/keys", {"name": "a admin", "role": "admin", "tenant_id": tenant_a}
    )
    b_keys = [
        await operator.ok(
            "POST", "/admin/keys", {"name": f"b {role}", "role": role, "tenant_id": tenant_b}
        )
        for role in ("admin", "member")
    ]
    return World(
        a_admin=operator.as_key(a_admin["key"]),
        tenant_a=tenant_a,
        tenant_b=tenant_b,
        b_key_ids=[k["id"] for k in b_keys],
        b_plaintexts=[k["key"] for k in b_keys],
    )


def same_answer(foreign: Answer, foreign_id: str, missing: Answer, missing_id: str) -> None:
    assert foreign[0] == missing[0]
    shown_foreign = orjson.dumps(foreign[1]).decode().replace(foreign_id, "ID")
    shown_missing = orjson.dumps(missing[1]).decode().replace(missing_id, "ID")
    assert shown_foreign == shown_missing


TenantCall = Callable[[Admin, str], Awaitable[Answer]]
TENANT_ID_CALLS: dict[str, TenantCall] = {
    "GET tenant": lambda c, t: c.call("GET", f"/admin/tenants/{t}"),
    "PATCH tenant": lambda c, t: c.call("PATCH", f"/admin/tenants/{t}", {"tier": "batch"}),
    "DELETE tenant": lambda c, t: c.call("DELETE", f"/admin/tenants/{t}"),
    "POST key in tenant": lambda c, t: c.call("POST", "/admin/keys", {"name": "x", "tenant_id": t}),
    "GET keys of tenant": lambda c, t: c.call("GET", "/admin/keys", tenant_id=t),
    "GET audit of tenant": lambda c, t: c.call("GET", "/admin/audit", tenant_id=t),
    "GET tenants after": lambda c, t: c.call("GET", "/admin/tenants", after=t),
}
KEY_ID_CALLS: dict[str, TenantCall] = {
    "GET key": lambda c, k: c.call("GET", f"/admin/keys/{k}"),
    "DELETE key": lambda c, k: c.call("DELETE", f"/admin/keys/{k}"),
    "GET keys after": lambda c, k: c.call("GET", "/admin/keys", after=k),
}


@pytest.mark.parametrize("name", sorted(TENANT_ID_CALLS))
async def test_foreign_tenant_id_is_answered_like_a_missing_one(world: World, name: str) -> None:
    call = TENANT_ID_CALLS[name]
    foreign = await call(world.a_admin, world.tenant_b)
    missing = await call(world.a_admin, MISSING_TENANT)
    assert foreign[0] in (400, 404), foreign
    same_answer(foreign, world.tenant_b, missing, MISSING_TENANT)


@pytest.mark.parametrize("name", sorted(KEY_ID_CALLS))
async def test_foreign_key_id_is_answered_like_a_missing_one(world: World, name: str) -> None:
    call = KEY_ID_CALLS[name]
    for key_id in world.b_key_ids:
        foreign = await call(world.a_admin, key_id)
        missing = await call(world.a_admin, MISSING_KEY)
        assert foreign[0] in (400, 404), foreign
        same_answer(foreign, key_id, missing, MISSING_KEY)


async def test_nothing_of_another_tenant_is_listed_or_changed(
    world: World, operator: Admin
) -> None:
    tenants = await world.a_admin.ok("GET", "/admin/tenants")
    assert [t["id"] for t in tenants["data"]] == [world.tenant_a]
    keys = await world.a_admin.ok("GET", "/admin/keys")
    assert {k["tenant_id"] for k in keys["data"]} == {world.tenant_a}
    audit = await world.a_admin.ok("GET", "/admin/audit")
    assert audit["data"] and {e["tenant_id"] for e in audit["data"]} == {world.tenant_a}

    # After every probe above and in the other tests, tenant B is untouched.
    for key_id in world.b_key_ids:
        assert (await operator.ok("GET", f"/admin/keys/{key_id}"))["status"] == "active"
    b = await operator.ok("GET", f"/admin/tenants/{world.tenant_b}")
    assert b["tier"] == "interactive"
    b_audit = await operator.ok("GET", "/admin/audit", tenant_id=world.tenant_b)
    assert {e["action"] for e in b_audit["data"]} == {"tenant.created", "key.created"}


async def test_a_tenant_admin_may_read_but_not_change_its_tenant(world: World) -> None:
    own = await world.a_admin.ok("GET", f"/admin/tenants/{world.tenant_a}")
    assert own["name"] == "a"
    status, body = await world.a_admin.call(
        "PATCH",
        f"/admin/tenants/{world.tenant_a}",
        {"settings": {"limits": {"requests_per_minute": 9}}},
    )
    assert status == 403 and body["error"]["code"] == "operator_only"
    status, body = await world.a_admin.call("POST", "/admin/tenants", {"name": "c"})
    assert status == 403


async def test_another_tenants_admin_key_is_no_operator(world: World) -> None:
    b_admin = world.a_admin.as_key(world.b_plaintexts[0])
    status, body = await b_admin.call("GET", f"/admin/tenants/{world.tenant_a}")
    assert status == 404
    assert all(p not in orjson.dumps(body).decode() for p in world.b_plaintexts)
