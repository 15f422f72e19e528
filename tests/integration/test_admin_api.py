"""The /admin API over real HTTP (uvicorn on loopback) on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib

import httpx
import orjson

from tests.integration.admin_client import Admin, admin_gateway, operator
from tests.support.gateway import ADMIN_KEY, RunningGateway
from tidegate_testing.fake_server import FakeUpstream

__all__ = ["admin_gateway", "operator"]  # fixtures used by name

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


def assert_error(body: dict[str, object], error_type: str) -> str:
    assert set(body) == {"error"}
    error = body["error"]
    assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}
    assert error["type"] == error_type
    return str(error["message"])


async def test_tenant_and_key_lifecycle(
    operator: Admin, admin_gateway: RunningGateway, fake: FakeUpstream
) -> None:
    created = await operator.ok(
        "POST",
        "/admin/tenants",
        {"name": "acme", "tier": "batch", "settings": {"limits": {"requests_per_minute": 60}}},
    )
    tenant_id = created["id"]
    assert created["object"] == "tenant" and created["tier"] == "batch"
    assert created["settings"]["limits"]["requests_per_minute"] == 60
    assert await operator.ok("GET", f"/admin/tenants/{tenant_id}") == created

    patched = await operator.ok(
        "PATCH",
        f"/admin/tenants/{tenant_id}",
        {"settings": {"budgets": {"daily_tokens": 1000}, "limits": {"requests_per_minute": None}}},
    )
    assert patched["settings"]["budgets"]["daily_tokens"] == 1000
    assert patched["settings"]["limits"]["requests_per_minute"] is None

    team_admin = await operator.ok(
        "POST",
        "/admin/keys",
        {"name": "acme admin", "role": "admin", "tenant_id": tenant_id, "expires_in_days": 30},
    )
    assert team_admin["key"].startswith("tg-") and team_admin["tenant_id"] == tenant_id
    assert team_admin["status"] == "active" and team_admin["expires_at"] is not None
    # The plaintext is shown once: reading the key again never returns it.
    shown = await operator.ok("GET", f"/admin/keys/{team_admin['id']}")
    assert "key" not in shown and shown["prefix"] == team_admin["key"][:8]

    acme = operator.as_key(team_admin["key"])
    # Its keys may not outlive the admin key that makes them (tests/.../test_key_grants.py).
    member = await acme.ok(
        "POST",
        "/admin/keys",
        {"name": "svc", "expires_in_days": 7, "settings": {"allowed_models": ["fake-model"]}},
    )
    assert member["tenant_id"] == tenant_id and member["role"] == "member"
    assert member["settings"]["allowed_models"] == ["fake-model"]

    async with httpx.AsyncClient(base_url=admin_gateway.url) as http:
        answer = await http.post(
            "/v1/chat/completions",
            json=CHAT,
            headers={"Authorization": f"Bearer {member['key']}"},
        )
    assert answer.status_code == 200, answer.text

    status, body = await operator.call("DELETE", f"/admin/tenants/{tenant_id}")
    assert status == 400 and "2 active key(s)" in assert_error(body, "invalid_request_error")
    for key_id in (member["id"], team_admin["id"]):
        revoked = await operator.ok("DELETE", f"/admin/keys/{key_id}")
        assert revoked["status"] == "revoked" and revoked["revoked_at"] is not None
    # A revoked key is refused at once by this gateway.
    status, body = await acme.call("GET", "/admin/keys")
    assert status == 401
    deleted = await operator.ok("DELETE", f"/admin/tenants/{tenant_id}")
    assert deleted == {"id": tenant_id, "object": "tenant.deleted", "deleted": True}
    status, body = await operator.call("GET", f"/admin/tenants/{tenant_id}")
    assert status == 404

    audit = await operator.ok("GET", "/admin/audit", tenant_id=tenant_id)
    assert [(e["action"], e["actor"]["name"]) for e in reversed(audit["data"])] == [
        ("tenant.created", "admin (from config)"),
        ("tenant.updated", "admin (from config)"),
        ("key.created", "admin (from config)"),
        ("key.created", "acme admin"),
        ("key.revoked", "admin (from config)"),
        ("key.revoked", "admin (from config)"),
        ("tenant.deleted", "admin (from config)"),
    ]
    assert audit["data"][3]["actor"]["key_id"] == team_admin["id"]
    dumped = orjson.dumps(audit).decode()
    for plaintext in (team_admin["key"], member["key"], ADMIN_KEY):
        assert plaintext not in dumped and plaintext[:8] not in dumped
        assert hashlib.sha256(plaintext.encode()).hexdigest() not in dumped
    # Nor in the access log.
    access = orjson.dumps(admin_gateway.access_lines()).decode()
    assert all(k not in access for k in (team_admin["key"], member["key"], ADMIN_KEY))


async def test_member_keys_get_403_everywhere(operator: Admin) -> None:
    created = await operator.ok("POST", "/admin/keys", {"name": "svc"})
    member = operator.as_key(created["key"])
    calls = [
        ("POST", "/admin/tenants", {"name": "x"}),
        ("GET", "/admin/tenants", None),
        ("GET", "/admin/tenants/ten_system", None),
        ("PATCH", "/admin/tenants/ten_system", {"tier": "batch"}),
        ("DELETE", "/admin/tenants/ten_system", None),
        ("POST", "/admin/keys", {"name": "y"}),
        ("GET", "/admin/keys", None),
        ("GET", f"/admin/keys/{created['id']}", None),
        ("DELETE", f"/admin/keys/{created['id']}", None),
        ("GET", "/admin/audit", None),
    ]
    for method, path, body in calls:
        status, answer = await member.call(method, path, body)
        assert status == 403, (method, path)
        assert "admin key" in assert_error(answer, "permission_error")
        assert created["key"] not in orjson.dumps(answer).decode()
    status, answer = await operator.as_key("").call("GET", "/admin/tenants")
    assert status == 401


async def test_bad_input_is_a_clear_400(operator: Admin) -> None:
    cases = [
        ({"name": "a", "tier": "gold"}, "tier"),
        ({"name": "a", "settings": {"limits": {"requests_per_minute": -1}}}, None),
        ({"name": "a", "colour": "red"}, "colour"),
        ({"tier": "batch"}, "name"),
    ]
    for body, param in cases:
        status, answer = await operator.call("POST", "/admin/tenants", body)
        assert status == 400, body
        assert_error(answer, "invalid_request_error")
        if param is not None:
            assert answer["error"]["param"] == param
        else:
            assert answer["error"]["param"] == "settings.limits.requests_per_minute"
    status, answer = await operator.call("POST", "/admin/keys", {"name": "k", "role": "root"})
    assert status == 400 and answer["error"]["param"] == "role"
    status, answer = await operator.call("GET", "/admin/keys", limit="1000")
    assert status == 400 and answer["error"]["param"] == "limit"
    status, answer = await operator.call("GET", "/admin/audit", after="x")
    assert status == 400 and answer["error"]["param"] == "after"
    status, answer = await operator.call("DELETE", "/admin/tenants/ten_system")
    assert status == 400 and "cannot be deleted" in assert_error(answer, "invalid_request_error")


async def test_lists_page_with_limit_and_after(operator: Admin) -> None:
    for name in ("a", "b", "c"):
        await operator.ok("POST", "/admin/tenants", {"name": name})
    first = await operator.ok("GET", "/admin/tenants", limit="2")
    assert first["has_more"] and [t["name"] for t in first["data"]] == ["system", "a"]
    rest = await operator.ok("GET", "/admin/tenants", limit="2", after=first["last_id"])
    assert not rest["has_more"] and [t["name"] for t in rest["data"]] == ["b", "c"]

    audit = await operator.ok("GET", "/admin/audit", limit="2")
    older = await operator.ok("GET", "/admin/audit", limit="2", after=str(audit["last_id"]))
    ids = [e["id"] for e in audit["data"] + older["data"]]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
