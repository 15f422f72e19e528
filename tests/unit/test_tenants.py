"""TenantService, tenant-aware keys and the audit log against a real store (SQLite and
PostgreSQL, see store_fixtures)."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.errors import InvalidRequestError, NotFoundError, PermissionDeniedError
from tidegate.store.models import (
    SYSTEM_TENANT_ID,
    ApiKey,
    AuditEvent,
    Batch,
    BatchLine,
    StoredFile,
)
from tidegate.tenancy.actors import Actor
from tidegate.tenancy.audit import AuditLog
from tidegate.tenancy.key_records import generate_key, new_row
from tidegate.tenancy.keys import KeyService
from tidegate.tenancy.policy import Budgets, RateLimits, TenantSettings
from tidegate.tenancy.tenants import TenantService, merge_patch

Sessions = async_sessionmaker[AsyncSession]
OPERATOR = Actor(name="ops", key_id="key_ops", tenant_id=None)


async def confined(sessions: Sessions, tenant_id: str) -> Actor:
    """A tenant admin acting through its own admin key (stored without an audit event, so the
    audit assertions below see only what the tests do)."""
    async with sessions.begin() as session:
        row = new_row(generate_key(), name="team admin", role="admin", now=datetime.now(UTC))
        row.id, row.tenant_id = "key_team", tenant_id
        session.add(row)
    return Actor(name="team admin", key_id="key_team", tenant_id=tenant_id)


async def audit_rows(sessions: Sessions) -> list[AuditEvent]:
    async with sessions() as session:
        return list(await session.scalars(select(AuditEvent).order_by(AuditEvent.id)))


async def test_create_get_list_update_delete(sessions: Sessions) -> None:
    tenants = TenantService(sessions=sessions)
    created = await tenants.create(
        "acme",
        "batch",
        {"limits": {"requests_per_minute": 60}, "allowed_models": ["m1"]},
        actor=OPERATOR,
    )
    assert created.id.startswith("ten_") and len(created.id) == 28
    assert created.tier == "batch"
    assert created.settings.limits == RateLimits(requests_per_minute=60)
    assert await tenants.get(created.id, actor=OPERATOR) == created
    assert [t.name for t in await tenants.list(actor=OPERATOR)] == ["system", "acme"]

    updated = await tenants.update(
        created.id,
        tier="interactive",
        settings={"limits": {"tokens_per_minute": 1000}, "budgets": {"daily_tokens": 5}},
        actor=OPERATOR,
    )
    # A merge patch: the earlier limit stays next to the new one.
    assert updated.settings.limits == RateLimits(requests_per_minute=60, tokens_per_minute=1000)
    assert updated.settings.budgets == Budgets(daily_tokens=5)
    assert updated.tier == "interactive" and updated.updated_at >= created.updated_at
    reset = await tenants.update(
        created.id, settings={"limits": {"requests_per_minute": None}}, actor=OPERATOR
    )
    assert reset.settings.limits == RateLimits(tokens_per_minute=1000)
    assert reset.settings.allowed_models == ["m1"]

    deleted = await tenants.delete(created.id, actor=OPERATOR)
    assert deleted.id == created.id
    with pytest.raises(NotFoundError):
        await tenants.get(created.id, actor=OPERATOR)


async def test_settings_are_stored_without_defaults(sessions: Sessions) -> None:
    tenants = TenantService(sessions=sessions)
    info = await tenants.create("lean", settings=TenantSettings(log_prompts=True))
    async with sessions() as session:
        stored = await session.scalar(
            text("SELECT settings FROM tenants WHERE id = :id").bindparams(id=info.id)
        )
    assert stored in ({"log_prompts": True}, '{"log_prompts": true}')


async def test_invalid_input_is_a_clear_400(sessions: Sessions) -> None:
    tenants = TenantService(sessions=sessions)
    with pytest.raises(InvalidRequestError, match="Unknown tier 'gold'") as caught:
        await tenants.create("acme", "gold")
    assert caught.value.param == "tier"
    with pytest.raises(InvalidRequestError) as caught:
        await tenants.create("acme", settings={"limits": {"requests_per_minute": 0}})
    assert caught.value.param == "settings.limits.requests_per_minute"
    with pytest.raises(InvalidRequestError) as caught:
        await tenants.create("acme", settings={"limitz": {}})
    assert caught.value.param == "settings.limitz"
    with pytest.raises(InvalidRequestError, match="name"):
        await tenants.create("   ")
    await tenants.create("acme")
    with pytest.raises(InvalidRequestError, match="already exists") as caught:
        await tenants.create("acme")
    assert caught.value.code == "tenant_name_taken"
    with pytest.raises(InvalidRequestError, match="already exists"):
        await tenants.create("system")
    # Failed creates leave neither a tenant nor an audit row behind.
    assert [t.name for t in await tenants.list()] == ["system", "acme"]
    assert [row.action for row in await audit_rows(sessions)] == ["tenant.created"]


async def test_concurrent_creates_with_one_name_make_one_tenant(sessions: Sessions) -> None:
    tenants = TenantService(sessions=sessions)
    results = await asyncio.gather(
        *(tenants.create("race") for _ in range(5)), return_exceptions=True
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, InvalidRequestError) for r in results if isinstance(r, BaseException))


async def test_delete_is_refused_while_the_tenant_has_active_keys(sessions: Sessions) -> None:
    tenants = TenantService(sessions=sessions)
    keys = KeyService(sessions=sessions, cache_ttl_s=60)
    tenant = await tenants.create("acme")
    active, _ = await keys.create("svc", "member", tenant.id)
    revoked, _ = await keys.create("old", "member", tenant.id)
    await keys.revoke(revoked.id)

    with pytest.raises(InvalidRequestError, match="1 active key") as caught:
        await tenants.delete(tenant.id, actor=OPERATOR)
    assert caught.value.code == "tenant_has_active_keys"
    await keys.revoke(active.id)
    await tenants.delete(tenant.id, actor=OPERATOR)
    # Its keys went with it; the audit log keeps their story.
    assert [k.tenant_id for k in await keys.list()] == []
    assert [row.action for row in await audit_rows(sessions)][-1] == "tenant.deleted"


async def test_delete_waits_for_running_batches_and_takes_finished_ones_along(
    sessions: Sessions,
) -> None:
    tenants = TenantService(sessions=sessions)
    tenant = await tenants.create("acme")
    at = datetime.now(UTC)
    async with sessions() as session, session.begin():
        session.add(
            StoredFile(
                id="file-1",
                tenant_id=tenant.id,
                purpose="batch",
                filename="in.jsonl",
                bytes=10,
                line_count=1,
                storage_key="k",
                created_at=at,
            )
        )
        session.add(
            Batch(
                id="batch_1",
                tenant_id=tenant.id,
                key_id="key_x",
                endpoint="/v1/completions",
                input_file_id="file-1",
                completion_window="24h",
                status="in_progress",
                created_at=at,
                expires_at=at,
                total=1,
                completed=0,
                failed=0,
            )
        )
        await session.flush()
        session.add(BatchLine(batch_id="batch_1", line_no=1, custom_id="a", body={}, attempts=0))

    with pytest.raises(InvalidRequestError) as caught:
        await tenants.delete(tenant.id, actor=OPERATOR)
    assert caught.value.code == "tenant_has_running_batches"
    async with sessions() as session, session.begin():
        (await session.get_one(Batch, "batch_1")).status = "cancelled"
    await tenants.delete(tenant.id, actor=OPERATOR)
    async with sessions() as session:
        for model in (StoredFile, Batch, BatchLine):
            assert list(await session.scalars(select(model))) == []


async def test_the_system_tenant_cannot_be_deleted(sessions: Sessions) -> None:
    with pytest.raises(InvalidRequestError, match="system tenant"):
        await TenantService(sessions=sessions).delete(SYSTEM_TENANT_ID, actor=OPERATOR)


async def test_principal_carries_its_tenant(sessions: Sessions) -> None:
    tenants = TenantService(sessions=sessions)
    tenant = await tenants.create("acme", "batch", {"limits": {"requests_per_minute": 5}})
    gateway = KeyService(sessions=sessions, cache_ttl_s=60)
    info, plaintext = await gateway.create(
        "svc", "member", tenant.id, settings={"allowed_models": ["m1"]}
    )
    principal = await gateway.authenticate(plaintext)
    assert (principal.tenant_id, principal.tenant_name, principal.tier) == (
        tenant.id,
        "acme",
        "batch",
    )
    assert principal.tenant.limits.requests_per_minute == 5
    assert principal.key.allowed_models == ["m1"]
    assert info.settings.allowed_models == ["m1"] and info.tenant_id == tenant.id

    await tenants.update(tenant.id, settings={"limits": {"requests_per_minute": 7}})
    assert (await gateway.authenticate(plaintext)).tenant.limits.requests_per_minute == 5
    gateway.forget_tenant(tenant.id)  # what the admin API does after a change
    assert (await gateway.authenticate(plaintext)).tenant.limits.requests_per_minute == 7


async def test_tenant_changes_elsewhere_apply_within_the_ttl(sessions: Sessions) -> None:
    tenants = TenantService(sessions=sessions)
    tenant = await tenants.create("acme")
    gateway = KeyService(sessions=sessions, cache_ttl_s=0.3)
    _, plaintext = await gateway.create("svc", "member", tenant.id)
    assert (await gateway.authenticate(plaintext)).tenant.log_prompts is False
    await tenants.update(tenant.id, settings={"log_prompts": True})
    await asyncio.sleep(0.35)
    assert (await gateway.authenticate(plaintext)).tenant.log_prompts is True


async def test_member_keys_cannot_administer(sessions: Sessions) -> None:
    keys = KeyService(sessions=sessions, cache_ttl_s=60)
    _, member = await keys.create("m", "member")
    with pytest.raises(PermissionDeniedError, match="admin key"):
        Actor.admin(await keys.authenticate(member))
    _, operator = await keys.create("o", "admin")
    assert Actor.admin(await keys.authenticate(operator)).is_operator
    tenant = await TenantService(sessions=sessions).create("acme")
    _, team_admin = await keys.create("t", "admin", tenant.id)
    actor = Actor.admin(await keys.authenticate(team_admin))
    assert actor.tenant_id == tenant.id and not actor.is_operator


def answer(error: BaseException, echoed: str) -> tuple[object, ...]:
    """What a client sees of an error, with the id it named replaced."""
    assert isinstance(error, (NotFoundError, InvalidRequestError))
    return (type(error), error.status, error.message.replace(echoed, "ID"), error.param)


async def caught(call: object) -> BaseException:
    assert asyncio.iscoroutine(call)
    try:
        await call
    except (NotFoundError, InvalidRequestError, PermissionDeniedError) as error:
        return error
    raise AssertionError("expected an error")


async def test_a_tenant_admin_sees_a_foreign_id_exactly_like_a_missing_one(
    sessions: Sessions,
) -> None:
    tenants = TenantService(sessions=sessions)
    keys = KeyService(sessions=sessions, cache_ttl_s=60)
    audit = AuditLog(sessions=sessions)
    mine = await tenants.create("mine")
    theirs = await tenants.create("theirs")
    their_key, _ = await keys.create("their svc", "member", theirs.id)
    me = await confined(sessions, mine.id)
    missing_tenant, missing_key = "ten_" + "0" * 24, "key_" + "0" * 24

    tenant_calls = [
        lambda tid: tenants.get(tid, actor=me),
        lambda tid: tenants.update(tid, tier="batch", actor=me),
        lambda tid: tenants.delete(tid, actor=me),
        lambda tid: keys.create("x", "member", tid, actor=me),
        lambda tid: keys.list(tenant_id=tid, actor=me),
        lambda tid: audit.list(actor=me, tenant_id=tid),
        lambda tid: tenants.list(actor=me, after=tid),
    ]
    for call in tenant_calls:
        foreign = await caught(call(theirs.id))
        missing = await caught(call(missing_tenant))
        assert answer(foreign, theirs.id) == answer(missing, missing_tenant)
    key_calls = [
        lambda kid: keys.get(kid, actor=me),
        lambda kid: keys.revoke(kid, actor=me),
        lambda kid: keys.list(actor=me, after=kid),
    ]
    for call in key_calls:
        foreign = await caught(call(their_key.id))
        missing = await caught(call(missing_key))
        assert answer(foreign, their_key.id) == answer(missing, missing_key)
    # Nothing of theirs changed.
    assert (await keys.get(their_key.id)).status() == "active"
    assert (await tenants.get(theirs.id)).tier == "interactive"


async def test_a_tenant_admin_manages_its_own_keys_only(sessions: Sessions) -> None:
    tenants = TenantService(sessions=sessions)
    keys = KeyService(sessions=sessions, cache_ttl_s=60)
    mine = await tenants.create("mine")
    theirs = await tenants.create("theirs")
    await keys.create("their svc", "member", theirs.id)
    me = await confined(sessions, mine.id)

    own, _ = await keys.create("my svc", "admin", mine.id, actor=me)
    assert [k.id for k in await keys.list(actor=me)] == ["key_team", own.id]
    assert [t.id for t in await tenants.list(actor=me)] == [mine.id]
    assert (await tenants.get(mine.id, actor=me)).name == "mine"
    assert (await keys.revoke(own.id, actor=me)).status() == "revoked"
    with pytest.raises(PermissionDeniedError):
        await tenants.update(mine.id, settings={"limits": {"requests_per_minute": 1}}, actor=me)
    with pytest.raises(PermissionDeniedError):
        await tenants.create("another", actor=me)
    with pytest.raises(PermissionDeniedError):
        await tenants.delete(mine.id, actor=me)


async def test_every_action_is_audited_without_secrets(sessions: Sessions) -> None:
    tenants = TenantService(sessions=sessions)
    keys = KeyService(sessions=sessions, cache_ttl_s=60)
    tenant = await tenants.create("acme", actor=OPERATOR)
    await tenants.update(tenant.id, tier="batch", actor=OPERATOR)
    await tenants.update(tenant.id, tier="batch", actor=OPERATOR)  # no change, no event
    info, plaintext = await keys.create(
        "svc", "member", tenant.id, actor=await confined(sessions, tenant.id)
    )
    await keys.revoke(info.id, actor=Actor.cli())
    await keys.revoke(info.id, actor=Actor.cli())  # already revoked, no event
    async with sessions.begin() as session:  # the acting admin key goes without an event
        (await session.get(ApiKey, "key_team")).revoked_at = datetime.now(UTC)  # type: ignore[union-attr]
    await tenants.delete(tenant.id, actor=OPERATOR)

    rows = await audit_rows(sessions)
    assert [(r.action, r.target_id, r.tenant_id) for r in rows] == [
        ("tenant.created", tenant.id, tenant.id),
        ("tenant.updated", tenant.id, tenant.id),
        ("key.created", info.id, tenant.id),
        ("key.revoked", info.id, tenant.id),
        ("tenant.deleted", tenant.id, tenant.id),
    ]
    assert [(r.actor, r.actor_key_id) for r in rows[1:4]] == [
        ("ops", "key_ops"),
        ("team admin", "key_team"),
        (Actor.cli().name, None),
    ]
    assert rows[1].details == {"tier": {"from": "interactive", "to": "batch"}}
    assert rows[2].details["name"] == "svc" and rows[2].details["role"] == "member"
    dumped = repr([(r.actor, r.details) for r in rows])
    assert plaintext not in dumped and plaintext[:8] not in dumped
    assert hashlib.sha256(plaintext.encode()).hexdigest() not in dumped


async def test_audit_reads_are_scoped_and_paged(sessions: Sessions) -> None:
    tenants = TenantService(sessions=sessions)
    audit = AuditLog(sessions=sessions)
    a = await tenants.create("a")
    b = await tenants.create("b")
    await tenants.update(a.id, tier="batch")

    everything = await audit.list(actor=OPERATOR)
    assert [(e.action, e.tenant_id) for e in everything] == [
        ("tenant.updated", a.id),
        ("tenant.created", b.id),
        ("tenant.created", a.id),
    ]
    assert [e.tenant_id for e in await audit.list(actor=await confined(sessions, a.id))] == [
        a.id,
        a.id,
    ]
    assert [e.tenant_id for e in await audit.list(actor=OPERATOR, tenant_id=b.id)] == [b.id]
    first = await audit.list(actor=OPERATOR, limit=2)
    rest = await audit.list(actor=OPERATOR, limit=2, after=first[-1].id)
    assert [e.id for e in first + rest] == [e.id for e in everything]


async def test_lists_page_with_after(sessions: Sessions) -> None:
    tenants = TenantService(sessions=sessions)
    keys = KeyService(sessions=sessions, cache_ttl_s=60)
    for name in ("a", "b", "c"):
        await tenants.create(name)
    everything = [t.id for t in await tenants.list()]
    first = await tenants.list(limit=2)
    rest = await tenants.list(limit=2, after=first[-1].id)
    assert [t.id for t in first + rest] == everything and len(everything) == 4

    created = [(await keys.create(f"k{i}", "member"))[0].id for i in range(3)]
    page = await keys.list(limit=2)
    assert [k.id for k in page + await keys.list(after=page[-1].id)] == created


async def test_a_key_in_a_missing_tenant_is_not_found(sessions: Sessions) -> None:
    keys = KeyService(sessions=sessions, cache_ttl_s=60)
    with pytest.raises(NotFoundError, match="ten_nope"):
        await keys.create("svc", "member", "ten_nope")
    async with sessions() as session:
        assert (await session.scalars(select(ApiKey))).all() == []


def test_merge_patch_follows_rfc_7396() -> None:
    target = {"a": {"b": 1, "c": 2}, "d": [1], "e": 1}
    patch = {"a": {"b": None, "x": 3}, "d": [2], "e": None, "f": {"g": None}}
    assert merge_patch(target, patch) == {"a": {"c": 2, "x": 3}, "d": [2], "f": {}}
    assert target["a"] == {"b": 1, "c": 2}  # the target is not changed in place
