"""`tidegate tenants` and tenant-aware `tidegate keys` through Typer's CliRunner, on a real
store (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
from sqlalchemy import select
from typer.testing import CliRunner, Result

from tidegate.commands.keys import keys_app
from tidegate.commands.tenants import tenants_app
from tidegate.store import create_engine, create_sessionmaker
from tidegate.store.models import AuditEvent
from tidegate.tenancy.keys import KeyService, Principal


def invoke(app: object, home: Path, store_url: str, *args: str) -> Result:
    env = {
        "TIDEGATE_HOME": str(home),
        "TIDEGATE_STORE__URL": store_url,
        "TIDEGATE_CONFIG": None,
        "COLUMNS": "200",
    }
    return CliRunner().invoke(app, list(args), env=env)  # type: ignore[arg-type]


def authenticate(store_url: str, plaintext: str) -> Principal:
    async def run() -> Principal:
        engine = create_engine(store_url)
        try:
            return await KeyService(
                sessions=create_sessionmaker(engine), cache_ttl_s=0
            ).authenticate(plaintext)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def audit_log(store_url: str) -> list[tuple[str, str, str]]:
    async def run() -> list[tuple[str, str, str]]:
        engine = create_engine(store_url)
        try:
            async with create_sessionmaker(engine)() as session:
                rows = await session.scalars(select(AuditEvent).order_by(AuditEvent.id))
                return [(row.action, row.target_id, row.actor) for row in rows]
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_tenant_lifecycle_with_keys(tmp_path: Path, store_url: str) -> None:
    created = invoke(
        tenants_app,
        tmp_path,
        store_url,
        "create",
        "acme",
        "--tier",
        "batch",
        "--rpm",
        "60",
        "--tpm",
        "10000",
        "--daily-cost",
        "2.5",
        "--models",
        "m1, m2",
        "--log-prompts",
    )
    assert created.exit_code == 0, created.output
    tenant_id = created.stdout.strip()
    assert tenant_id.startswith("ten_")
    assert "limits.requests_per_minute=60" in created.stderr

    key = invoke(
        keys_app,
        tmp_path,
        store_url,
        "create",
        "--name",
        "svc",
        "--tenant",
        tenant_id,
        "--rpm",
        "5",
    )
    assert key.exit_code == 0, key.output
    principal = authenticate(store_url, key.stdout.strip())
    assert principal.tenant_id == tenant_id and principal.tier == "batch"
    assert principal.tenant.limits.tokens_per_minute == 10_000
    assert principal.tenant.budgets.daily_cost_usd == 2.5
    assert principal.tenant.allowed_models == ["m1", "m2"] and principal.tenant.log_prompts
    assert principal.key.limits.requests_per_minute == 5

    updated = invoke(
        tenants_app, tmp_path, store_url, "update", tenant_id, "--rpm", "0", "--no-log-prompts"
    )
    assert updated.exit_code == 0, updated.output
    principal = authenticate(store_url, key.stdout.strip())
    assert principal.tenant.limits.requests_per_minute is None  # 0 resets
    assert principal.tenant.limits.tokens_per_minute == 10_000  # untouched
    assert not principal.tenant.log_prompts

    listed = invoke(tenants_app, tmp_path, store_url, "list")
    assert listed.exit_code == 0 and "acme" in listed.stdout and "system" in listed.stdout
    keys_listed = invoke(keys_app, tmp_path, store_url, "list", "--tenant", tenant_id)
    assert principal.key_id in keys_listed.stdout and "svc" in keys_listed.stdout

    refused = invoke(tenants_app, tmp_path, store_url, "delete", tenant_id)
    assert refused.exit_code == 1 and "active key" in refused.stderr
    assert invoke(keys_app, tmp_path, store_url, "revoke", principal.key_id).exit_code == 0
    deleted = invoke(tenants_app, tmp_path, store_url, "delete", tenant_id)
    assert deleted.exit_code == 0, deleted.output

    actions = audit_log(store_url)
    assert [(action, target) for action, target, _ in actions] == [
        ("tenant.created", tenant_id),
        ("key.created", principal.key_id),
        ("tenant.updated", tenant_id),
        ("key.revoked", principal.key_id),
        ("tenant.deleted", tenant_id),
    ]
    assert all(actor.startswith("cli:") for _, _, actor in actions)


def test_errors_are_one_line(tmp_path: Path, store_url: str) -> None:
    bad_tier = invoke(tenants_app, tmp_path, store_url, "create", "x", "--tier", "gold")
    assert bad_tier.exit_code == 1 and "Unknown tier 'gold'" in bad_tier.stderr
    missing = invoke(keys_app, tmp_path, store_url, "create", "--name", "s", "--tenant", "ten_no")
    assert missing.exit_code == 1 and "No tenant with id 'ten_no'" in missing.stderr
    system = invoke(tenants_app, tmp_path, store_url, "delete", "ten_system")
    assert system.exit_code == 1 and "cannot be deleted" in system.stderr


def test_tenants_and_keys_list_as_json(tmp_path: Path, store_url: str) -> None:
    created = invoke(tenants_app, tmp_path, store_url, "create", "acme", "--rpm", "7")
    assert created.exit_code == 0, created.output
    tenant_id = created.stdout.strip()
    key = invoke(keys_app, tmp_path, store_url, "create", "--name", "svc", "--tenant", tenant_id)
    assert key.exit_code == 0, key.output

    tenants = orjson.loads(invoke(tenants_app, tmp_path, store_url, "list", "--json").stdout)
    (acme,) = [t for t in tenants if t["id"] == tenant_id]
    assert acme["name"] == "acme" and acme["settings"]["limits"]["requests_per_minute"] == 7

    keys = orjson.loads(
        invoke(keys_app, tmp_path, store_url, "list", "--tenant", tenant_id, "--json").stdout
    )
    assert [(k["name"], k["status"], k["tenant_id"]) for k in keys] == [
        ("svc", "active", tenant_id)
    ]
    assert key.stdout.strip() not in str(keys) and "hash" not in keys[0]
