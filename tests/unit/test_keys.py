"""KeyService against a real store: a SQLite file and PostgreSQL (see store_fixtures)."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.sql_statements import count_statements
from tidegate.errors import AuthenticationError, InvalidRequestError, NotFoundError
from tidegate.store import StoreUnavailableError, create_engine, create_sessionmaker
from tidegate.store.models import SYSTEM_TENANT_ID
from tidegate.tenancy.key_cache import RefusedKeys
from tidegate.tenancy.keys import KeyService, Principal
from tidegate.tenancy.policy import KeySettings, TenantSettings

Sessions = async_sessionmaker[AsyncSession]


def service(sessions: Sessions, ttl: float = 60.0, max_entries: int = 10_000) -> KeyService:
    return KeyService(sessions=sessions, cache_ttl_s=ttl, cache_max_entries=max_entries)


async def test_created_key_authenticates_as_its_principal(sessions: Sessions) -> None:
    keys = service(sessions)
    info, plaintext = await keys.create("ci runner", "member")

    assert plaintext.startswith("tg-") and len(plaintext) >= 46
    assert info.id.startswith("key_") and info.prefix == plaintext[:8]
    assert info.role == "member" and info.status() == "active"
    principal = await keys.authenticate(plaintext)
    assert principal == Principal(
        key_id=info.id,
        role="member",
        name="ci runner",
        tenant_id=SYSTEM_TENANT_ID,
        tenant_name="system",
        tier="internal",
        tenant=TenantSettings(),
        key=KeySettings(),
    )


async def test_store_holds_only_the_hash(sessions: Sessions) -> None:
    keys = service(sessions)
    info, plaintext = await keys.create("alice", "admin")

    async with sessions() as session:
        rows = (await session.execute(text("SELECT * FROM api_keys"))).all()
    assert len(rows) == 1
    values = [str(value) for value in rows[0]]
    assert hashlib.sha256(plaintext.encode()).hexdigest() in values
    assert all(plaintext not in value for value in values)
    listed = await keys.list()
    assert [key.id for key in listed] == [info.id]
    assert plaintext not in repr(listed)
    assert hashlib.sha256(plaintext.encode()).hexdigest() not in repr(listed)


async def test_keys_are_distinct_and_listed_oldest_first(sessions: Sessions) -> None:
    keys = service(sessions)
    created = [await keys.create(f"k{i}", "member") for i in range(3)]
    assert len({plaintext for _, plaintext in created}) == 3
    assert [info.id for info in await keys.list()] == [info.id for info, _ in created]


async def test_unknown_key_is_rejected_with_a_helpful_message(sessions: Sessions) -> None:
    keys = service(sessions)
    bogus = "tg-" + "x" * 43
    with pytest.raises(AuthenticationError) as caught:
        await keys.authenticate(bogus)
    assert caught.value.message.startswith("Incorrect API key provided.")
    assert "tidegate keys create" in caught.value.message
    assert bogus not in str(caught.value)
    assert caught.value.code == "invalid_api_key"
    with pytest.raises(AuthenticationError, match="didn't provide an API key"):
        await keys.authenticate("")


async def test_revoked_key_is_rejected(sessions: Sessions) -> None:
    keys = service(sessions)
    info, plaintext = await keys.create("bob", "member")
    await keys.authenticate(plaintext)

    revoked = await keys.revoke(info.id)
    assert revoked.revoked_at is not None and revoked.status() == "revoked"
    # The revoking service drops its own cache entry at once.
    with pytest.raises(AuthenticationError, match="has been revoked") as caught:
        await keys.authenticate(plaintext)
    assert plaintext not in str(caught.value)
    # Another process (a fresh service) rejects it too, and revoking again changes nothing.
    with pytest.raises(AuthenticationError):
        await service(sessions).authenticate(plaintext)
    assert (await keys.revoke(info.id)).revoked_at == revoked.revoked_at


async def test_revoking_an_unknown_id_is_not_found(sessions: Sessions) -> None:
    with pytest.raises(NotFoundError, match="key_nope.*tidegate keys list"):
        await service(sessions).revoke("key_nope")


async def test_expired_key_is_rejected_even_when_cached(sessions: Sessions) -> None:
    keys = service(sessions, ttl=60.0)
    info, plaintext = await keys.create(
        "short-lived", "member", expires_at=datetime.now(UTC) + timedelta(seconds=0.5)
    )
    assert (await keys.authenticate(plaintext)).key_id == info.id
    await asyncio.sleep(0.6)
    with pytest.raises(AuthenticationError, match="expired"):
        await keys.authenticate(plaintext)
    assert (await keys.list())[0].status() == "expired"


async def test_create_validates_its_input(sessions: Sessions) -> None:
    keys = service(sessions)
    with pytest.raises(InvalidRequestError, match="name"):
        await keys.create("  ", "member")
    with pytest.raises(InvalidRequestError, match="future"):
        await keys.create("late", "member", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert await keys.list() == []


async def test_revocation_elsewhere_takes_effect_after_the_ttl(sessions: Sessions) -> None:
    gateway = service(sessions, ttl=0.4)
    cli = service(sessions)
    info, plaintext = await cli.create("carol", "member")
    await gateway.authenticate(plaintext)

    await cli.revoke(info.id)
    # Within the TTL the gateway answers from its cache, without the store.
    assert (await gateway.authenticate(plaintext)).key_id == info.id
    await asyncio.sleep(0.45)
    with pytest.raises(AuthenticationError, match="revoked"):
        await gateway.authenticate(plaintext)


async def test_cache_hit_never_reaches_the_store_and_records_last_use(sessions: Sessions) -> None:
    # How fast a hit is belongs to the overhead benchmark; what makes it fast is checked here.
    keys = service(sessions)
    _, plaintext = await keys.create("hot", "member")
    await keys.authenticate(plaintext)
    assert (await keys.list())[0].last_used_at is not None

    statements = count_statements(sessions)
    for _ in range(1_000):
        await keys.authenticate(plaintext)
    assert [s for s in statements if s.lstrip().upper().startswith("SELECT")] == []
    assert len(statements) <= 1, statements  # at most one batched last-use write


async def test_cache_is_bounded(sessions: Sessions) -> None:
    keys = service(sessions, max_entries=3)
    plaintexts = [(await keys.create(f"k{i}", "member"))[1] for i in range(5)]
    for plaintext in plaintexts:
        await keys.authenticate(plaintext)
    assert keys.cache_size == 3
    # Evicted keys still work: they are looked up again.
    assert (await keys.authenticate(plaintexts[0])).name == "k0"


async def test_concurrent_requests_with_one_new_key_all_pass(sessions: Sessions) -> None:
    keys = service(sessions)
    info, plaintext = await keys.create("burst", "member")
    principals = await asyncio.gather(*(keys.authenticate(plaintext) for _ in range(50)))
    assert {principal.key_id for principal in principals} == {info.id}


async def test_generated_admin_key_is_created_once(sessions: Sessions) -> None:
    keys = service(sessions)
    plaintext = await keys.ensure_admin_key(None)
    assert plaintext is not None
    assert (await keys.authenticate(plaintext)).role == "admin"
    assert await keys.ensure_admin_key(None) is None
    assert [info.role for info in await keys.list()] == ["admin"]


async def test_generated_admin_key_returns_after_the_last_admin_is_revoked(
    sessions: Sessions,
) -> None:
    keys = service(sessions)
    assert await keys.ensure_admin_key(None) is not None
    await keys.create("member", "member")
    await keys.revoke((await keys.list())[0].id)
    assert await keys.ensure_admin_key(None) is not None


async def test_two_starting_gateways_generate_one_admin_key(store_url: str) -> None:
    from tidegate.store import migrate

    await migrate(store_url)
    engines = [create_engine(store_url) for _ in range(2)]
    try:
        services = [service(create_sessionmaker(engine)) for engine in engines]
        results = await asyncio.gather(*(keys.ensure_admin_key(None) for keys in services))
        assert sum(result is not None for result in results) == 1
        assert len(await services[0].list()) == 1
    finally:
        for engine in engines:
            await engine.dispose()


async def test_configured_admin_key_is_stored_idempotently(sessions: Sessions) -> None:
    keys = service(sessions)
    configured = SecretStr("tg-configured-admin-key-0123456789")
    assert await keys.ensure_admin_key(configured) is None
    assert await keys.ensure_admin_key(configured) is None

    listed = await keys.list()
    assert len(listed) == 1 and listed[0].role == "admin"
    assert listed[0].prefix == "tg-confi"
    assert (await keys.authenticate(configured.get_secret_value())).role == "admin"
    # With a configured key present, none is generated.
    assert await keys.ensure_admin_key(None) is None


async def test_configured_admin_key_must_be_usable(sessions: Sessions) -> None:
    keys = service(sessions)
    with pytest.raises(InvalidRequestError, match="at least 16") as caught:
        await keys.ensure_admin_key(SecretStr("short"))
    assert "short" not in caught.value.message

    configured = SecretStr("tg-configured-admin-key-0123456789")
    await keys.ensure_admin_key(configured)
    await keys.revoke((await keys.list())[0].id)
    with pytest.raises(InvalidRequestError, match="revoked") as caught:
        await keys.ensure_admin_key(configured)
    assert configured.get_secret_value() not in caught.value.message


async def test_unreachable_store_raises_a_tidegate_error() -> None:
    engine = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    try:
        keys = service(create_sessionmaker(engine))
        plaintext = "tg-" + "y" * 43
        with pytest.raises(StoreUnavailableError) as caught:
            await keys.authenticate(plaintext)
        assert caught.value.status == 503
        assert plaintext not in str(caught.value)
    finally:
        await engine.dispose()


async def test_refused_key_is_answered_from_memory_within_the_ttl(sessions: Sessions) -> None:
    keys = KeyService(sessions=sessions, cache_ttl_s=60.0, refused_ttl_s=0.3)
    bogus = "tg-" + "y" * 43
    with pytest.raises(AuthenticationError) as first:
        await keys.authenticate(bogus)
    statements = count_statements(sessions)
    for _ in range(50):
        with pytest.raises(AuthenticationError) as again:
            await keys.authenticate(bogus)
        assert (again.value.message, again.value.code) == (first.value.message, first.value.code)
    assert statements == []  # a flood of one bad key never reaches the store
    await asyncio.sleep(0.35)
    with pytest.raises(AuthenticationError):
        await keys.authenticate(bogus)
    assert statements, "after the TTL the store is asked again"


async def test_key_stored_after_being_refused_works(sessions: Sessions) -> None:
    gateway = KeyService(sessions=sessions, cache_ttl_s=60.0, refused_ttl_s=0.3)
    configured = "tg-configured-admin-key-" + "z" * 20
    with pytest.raises(AuthenticationError):
        await gateway.authenticate(configured)
    # Stored through another process: accepted once the refusal's TTL is over.
    await service(sessions).ensure_admin_key(SecretStr(configured))
    with pytest.raises(AuthenticationError):
        await gateway.authenticate(configured)
    await asyncio.sleep(0.35)
    assert (await gateway.authenticate(configured)).role == "admin"

    # Stored through this process: accepted at once.
    other = "tg-another-admin-key-" + "w" * 20
    with pytest.raises(AuthenticationError):
        await gateway.authenticate(other)
    await gateway.ensure_admin_key(SecretStr(other))
    assert (await gateway.authenticate(other)).role == "admin"


async def test_refused_keys_are_bounded(sessions: Sessions) -> None:
    refused = RefusedKeys(ttl_s=60.0, max_entries=3)
    error = AuthenticationError("Incorrect API key provided.", code="invalid_api_key")
    for index in range(10):
        refused.put(f"hash{index}", error)
    assert len(refused) == 3
    refused.check("hash0")  # evicted: the store would be asked again
    with pytest.raises(AuthenticationError, match="Incorrect API key"):
        refused.check("hash9")
