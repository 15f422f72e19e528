"""A tenant admin may narrow what it hands out, never widen it (issue 13, finding 3).

Every field of a new key is tried as a tenant admin, widened (403 naming the field and its
ceiling, nothing created) and narrowed (201); every field of the tenant is tried as a PATCH by
the same admin (403: the tenant is the operator's grant, whatever the field, including ones
added later). Over real HTTP, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.admin_client import Admin, admin_gateway, operator
from tidegate.tenancy.policy import TenantSettings

__all__ = ["admin_gateway", "operator"]  # fixtures used by name

MODELS = ["fake-model", "other", "third"]
TENANT_SETTINGS = {
    "limits": {"requests_per_minute": 60, "tokens_per_minute": 1000, "concurrent_requests": 4},
    "budgets": {"daily_tokens": 5000},
    "allowed_models": MODELS,
}
# The tenant admin's own key: tighter than its tenant on concurrency and models, and expiring.
ADMIN_SETTINGS = {"limits": {"concurrent_requests": 2}, "allowed_models": MODELS[:2]}
ADMIN_EXPIRES_DAYS = 10
# What a valid narrowed key must say at least (the admin's key caps these).
WITHIN = {"allowed_models": ["fake-model"], "limits": {"concurrent_requests": 1}}
WITHIN_DAYS = 5

# (what is tried, key body fields, the field named in the 403, words the message must hold)
WIDENINGS: list[tuple[str, dict[str, Any], str, list[str]]] = [
    ("a higher class than the tier", {"priority": "interactive"}, "settings.priority", ["batch"]),
    ("a model the tenant lacks", {"allowed_models": ["fake-model", "gpt-x"]},
     "settings.allowed_models", ["gpt-x", "fake-model, other"]),
    ("a model only the tenant has", {"allowed_models": ["third"]},
     "settings.allowed_models", ["third", "your key"]),
    ("the tenant's models by leaving them unset", {"allowed_models": None},
     "settings.allowed_models", ["unset", "third"]),
    ("more requests per minute", {"limits": {"requests_per_minute": 61}},
     "settings.limits.requests_per_minute", ["60", "tenant"]),
    ("more tokens per minute", {"limits": {"tokens_per_minute": 1001}},
     "settings.limits.tokens_per_minute", ["1000", "tenant"]),
    ("more concurrency than the admin's key", {"limits": {"concurrent_requests": 3}},
     "settings.limits.concurrent_requests", ["2", "your key"]),
    ("the tenant's concurrency by leaving it unset", {"limits": {"concurrent_requests": None}},
     "settings.limits.concurrent_requests", ["unset", "2"]),
]  # fmt: skip
NARROWINGS: list[tuple[str, dict[str, Any]]] = [
    ("the batch class", {"priority": "batch"}),
    ("the class of the tier (unset)", {}),
    ("fewer models", {"allowed_models": ["fake-model"]}),
    ("all the models the admin's key has", {"allowed_models": MODELS[:2]}),
    ("no model at all", {"allowed_models": []}),
    ("lower limits", {"limits": {"requests_per_minute": 5, "tokens_per_minute": 10}}),
    ("the ceilings exactly", {"limits": {"requests_per_minute": 60, "tokens_per_minute": 1000}}),
    ("the admin key's concurrency", {"limits": {"concurrent_requests": 2}}),
]
# A PATCH of each tenant field by its admin: a widening where one exists, else a plain change.
TENANT_PATCHES: dict[str, Any] = {
    "limits": {"requests_per_minute": 10_000},
    "budgets": {"daily_tokens": 10**9},
    "allowed_models": None,
    "max_prompt_tokens": 10**6,
    "default_max_tokens": 10**5,
    "max_tokens_limit": 10**6,
    "log_prompts": True,
    "prompt_retention_days": 3650,
    "on_limiter_unavailable": "open",
    "max_batch_file_bytes": 10**12,
    "max_batch_file_lines": 10**9,
}


def key_body(settings: dict[str, Any], days: int | None = WITHIN_DAYS) -> dict[str, Any]:
    merged = {**WITHIN, **settings}
    merged["limits"] = {**WITHIN["limits"], **settings.get("limits", {})}  # type: ignore[dict-item]
    body: dict[str, Any] = {"name": "svc", "role": "member", "settings": merged}
    if days is not None:
        body["expires_in_days"] = days
    return body


@pytest.fixture
async def tenant_admin(operator: Admin) -> tuple[Admin, str]:
    tenant = await operator.ok(
        "POST", "/admin/tenants", {"name": "batchers", "tier": "batch", "settings": TENANT_SETTINGS}
    )
    key = await operator.ok(
        "POST",
        "/admin/keys",
        {
            "name": "batchers admin",
            "role": "admin",
            "tenant_id": tenant["id"],
            "settings": ADMIN_SETTINGS,
            "expires_in_days": ADMIN_EXPIRES_DAYS,
        },
    )
    return operator.as_key(key["key"]), tenant["id"]


async def test_every_widening_is_refused_and_every_narrowing_allowed(
    operator: Admin, tenant_admin: tuple[Admin, str]
) -> None:
    admin, tenant_id = tenant_admin
    cases = [(what, key_body(s), param, words) for what, s, param, words in WIDENINGS]
    cases += [
        ("a key that never expires", key_body({}, days=None), "expires_in_days", ["never"]),
        ("a key outliving the admin's", key_body({}, days=11), "expires_in_days", ["after"]),
    ]
    for what, body, param, words in cases:
        status, answer = await admin.call("POST", "/admin/keys", body)
        assert status == 403, (what, answer)
        error = answer["error"]
        assert set(error) == {"message", "type", "param", "code"}, what
        assert error["type"] == "permission_error" and error["code"] == "exceeds_grant", what
        assert error["param"] == param, (what, error)
        assert param in error["message"], (what, error["message"])
        assert all(w in error["message"] for w in words), (what, error["message"])

    created = []
    for what, settings in NARROWINGS:
        for role in ("member", "admin"):
            body = {**key_body(settings), "role": role}
            status, answer = await admin.call("POST", "/admin/keys", body)
            assert status == 201, (what, role, answer)
            assert answer["tenant_id"] == tenant_id
            assert answer["settings"]["allowed_models"] == body["settings"]["allowed_models"]
            created.append(answer["id"])
    status, answer = await admin.call("POST", "/admin/keys", key_body({}, days=9))
    assert status == 201, answer  # expiring before the admin's own key is within it

    # Only what was allowed exists: the widenings created nothing.
    listed = await operator.ok("GET", "/admin/keys", tenant_id=tenant_id, limit="100")
    assert len(listed["data"]) == 1 + len(created) + 1
    # The operator grants: it may still give this tenant's key the interactive class.
    await operator.ok(
        "POST",
        "/admin/keys",
        {"name": "rush", "tenant_id": tenant_id, "settings": {"priority": "interactive"}},
    )


async def test_a_narrowed_admin_key_is_the_ceiling_of_the_keys_it_makes(
    tenant_admin: tuple[Admin, str],
) -> None:
    admin, _ = tenant_admin
    narrow = {"limits": {"requests_per_minute": 7, "concurrent_requests": 1}}
    made = await admin.ok("POST", "/admin/keys", {**key_body(narrow), "role": "admin"})
    deputy = admin.as_key(made["key"])
    status, answer = await deputy.call(
        "POST", "/admin/keys", key_body({"limits": {"requests_per_minute": 8}})
    )
    assert status == 403 and answer["error"]["param"] == "settings.limits.requests_per_minute"
    assert "7" in answer["error"]["message"]
    seven = key_body({"limits": {"requests_per_minute": 7}}, days=WITHIN_DAYS + 1)
    status, answer = await deputy.call("POST", "/admin/keys", seven)
    assert status == 403 and answer["error"]["param"] == "expires_in_days"
    await deputy.ok("POST", "/admin/keys", {**seven, "expires_in_days": WITHIN_DAYS - 1})


async def test_a_tenant_admin_changes_no_field_of_its_tenant(
    operator: Admin, tenant_admin: tuple[Admin, str]
) -> None:
    admin, tenant_id = tenant_admin
    before = await operator.ok("GET", f"/admin/tenants/{tenant_id}")
    # Every settings field the schema has, so a field added later is covered without an edit
    # here (a forwarded-extension allow-list, say): those get their current value back.
    patches: list[tuple[str, dict[str, Any]]] = [
        ("tier", {"tier": "interactive"}),
        ("name", {"name": "renamed"}),
    ]
    for field in TenantSettings.model_fields:
        value = TENANT_PATCHES.get(field, before["settings"][field])
        patches.append((f"settings.{field}", {"settings": {field: value}}))
    for param, body in patches:
        status, answer = await admin.call("PATCH", f"/admin/tenants/{tenant_id}", body)
        assert status == 403, (param, answer)
        error = answer["error"]
        assert error["code"] == "operator_only" and error["type"] == "permission_error"
        assert error["param"] is not None and error["param"].startswith(param), (param, error)
        assert "operator" in error["message"], error
    after = await operator.ok("GET", f"/admin/tenants/{tenant_id}")
    assert after == before
