"""A request's identity for metering is the gateway's, never the client's (issue 13, finding 1).

A client may send any ``x-request-id``: the same one on every request, or one another tenant
used. Each request still gets its own usage record (keyed by the gateway's id, which the
response carries in ``x-tidegate-request-id``), the client's id is echoed in ``x-request-id``
and kept as ``client_request_id``, and budgets seeded from the store count every request.
Through a real gateway on loopback in front of the fake upstream, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from tests.integration.test_batches_api import chat_line, client, read_lines, submit, wait_for
from tests.support.gateway import (
    ADMIN_KEY,
    RunningGateway,
    auth,
    create_member,
    run_gateway,
    usage_records,
)
from tidegate_testing.fake_server import FakeUpstream

FIXED_ID = "my-fixed-request-id"
SECTIONS = {"metering": {"flush_interval_s": 0.05}}
BODY = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


async def chat(http: httpx.AsyncClient, key: str, **headers: str) -> httpx.Response:
    response = await http.post("/v1/chat/completions", json=BODY, headers={**auth(key), **headers})
    return response


async def test_a_repeated_or_borrowed_request_id_never_merges_usage(
    tmp_path: Path, fake: FakeUpstream, store_url: str
) -> None:
    fake.behaviour.tokens = 5
    async with (
        run_gateway(tmp_path, upstreams=[fake], store_url=store_url, sections=SECTIONS) as gw,
        httpx.AsyncClient(base_url=gw.url, timeout=30) as http,
    ):
        a = await create_member(http, "a")
        b = await create_member(http, "b")
        answers = [await chat(http, a.key, **{"x-request-id": FIXED_ID}) for _ in range(20)]
        # The other tenant borrows the same id (concurrently, as an attacker would race it).
        answers += await asyncio.gather(
            *(chat(http, b.key, **{"x-request-id": FIXED_ID}) for _ in range(2))
        )
        assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
        assert {r.headers["x-request-id"] for r in answers} == {FIXED_ID}  # echoed
        ours = [r.headers["x-tidegate-request-id"] for r in answers]
        assert len(set(ours)) == 22 and FIXED_ID not in ours
        upstream_ids = {h["x-request-id"] for h in fake.request_headers}
        assert upstream_ids == set(ours)  # the engine sees the gateway's id too

        records = await usage_records(http, ours)
        mine = [r for r in records if r["request_id"] in ours]
        assert len(mine) == 22
        assert {r["client_request_id"] for r in mine} == {FIXED_ID}
        assert sorted(r["tenant_id"] for r in mine) == sorted(
            [a.tenant_id] * 20 + [b.tenant_id] * 2
        )
        spent_a = sum(
            r["prompt_tokens"] + r["completion_tokens"]
            for r in mine
            if r["tenant_id"] == a.tenant_id
        )
        by_client_id = await http.get(
            "/admin/usage/records",
            params={"client_request_id": FIXED_ID, "tenant_id": a.tenant_id, "limit": "100"},
            headers=auth(ADMIN_KEY),
        )
        assert len(by_client_id.json()["data"]) == 20
        access = [line for line in gw.access_lines() if line["request_id"] in ours]
        assert {line["client_request_id"] for line in access} == {FIXED_ID}

        # A budget given now is seeded from the store: all 20 requests count, so none is left.
        patched = await http.patch(
            f"/admin/tenants/{a.tenant_id}",
            json={"settings": {"budgets": {"daily_tokens": spent_a}}},
            headers=auth(ADMIN_KEY),
        )
        assert patched.status_code == 200, patched.text
        assert_budget_spent(await chat(http, a.key))

    upstream_calls = len(fake.requests)
    # After a restart the in-process limit store starts empty and is seeded from the store.
    async with (
        run_gateway(tmp_path, upstreams=[fake], store_url=store_url, sections=SECTIONS) as gw,
        httpx.AsyncClient(base_url=gw.url, timeout=30) as http,
    ):
        assert_budget_spent(await chat(http, a.key, **{"x-request-id": FIXED_ID}))
        assert (await chat(http, b.key)).status_code == 200  # b has no budget
    assert len(fake.requests) == upstream_calls + 1


async def test_without_a_client_id_both_headers_carry_the_gateways(
    gateway: RunningGateway,
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        for path in ("/v1/chat/completions", "/v1/models", "/admin/keys"):
            sent = {"x-request-id": "bad id with spaces"}  # not a sane id: not echoed
            response = await http.request(
                "POST" if path.endswith("completions") else "GET",
                path,
                json=BODY if path.endswith("completions") else None,
                headers={**auth(ADMIN_KEY), **sent},
            )
            assert response.status_code == 200, response.text
            own = response.headers["x-tidegate-request-id"]
            assert own.startswith("req_") and response.headers["x-request-id"] == own


def assert_budget_spent(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "budget_exceeded"


async def test_custom_ids_and_file_names_are_only_labels(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    """custom_id is unique within one batch only, and a file name is only a name: the same
    ones in two batches of one tenant and in another tenant's batch run and meter apart."""
    batch = {"poll_interval_s": 0.05, "lease_s": 5}
    async with (
        run_gateway(tmp_path, upstreams=[fake], sections={"batch": batch, **SECTIONS}) as gw,
        httpx.AsyncClient(base_url=gw.url, timeout=30) as http,
    ):
        alice = await create_member(http, "alice")
        bob = await create_member(http, "bob")
        runs = []
        for member in (alice, alice, bob):
            api = client(gw, member)
            created = await submit(api, [chat_line("same"), chat_line("other")])
            runs.append((api, created))
        outputs = []
        for api, created in runs:
            done = await wait_for(api, created.id, "completed", "failed")
            assert done.status == "completed", done.errors
            outputs += await read_lines(api, done.output_file_id)
        assert sorted(line["custom_id"] for line in outputs) == ["other"] * 3 + ["same"] * 3
        ids = [line["id"] for line in outputs]
        assert len(set(ids)) == 6
        records = await usage_records(http, ids)
        metered = [r for r in records if r["request_id"] in ids]
        assert sorted(r["key_id"] for r in metered) == sorted([alice.key_id] * 4 + [bob.key_id] * 2)
        input_files = {created.input_file_id for _, created in runs}
        assert len(input_files) == 3  # three uploads named input.jsonl, three files


async def test_a_session_id_pins_replicas_only_within_its_tenant(tmp_path: Path) -> None:
    """x-tidegate-session-id is the client's choice: another tenant sending the same ids
    gets its own placement (not a pin to the replicas holding the first tenant's caches)."""
    fakes = [FakeUpstream(model="fake-model") for _ in range(2)]
    for fake in fakes:
        await fake.start()
    pools = [{"name": "fake-model", "balancer": "prefix_affinity", "circuit_breaker": False}]
    try:
        async with (
            run_gateway(tmp_path, upstreams=fakes, sections={"routing": {"pools": pools}}) as gw,
            httpx.AsyncClient(base_url=gw.url, timeout=30) as http,
        ):
            tenants = [await create_member(http, name) for name in ("a", "b")]
            sessions = [f"conversation-{n}" for n in range(16)]

            async def placement(key: str) -> list[str]:
                answers = [await chat(http, key, **{"x-tidegate-session-id": s}) for s in sessions]
                return [r.headers["x-tidegate-backend"] for r in answers]

            a_first = await placement(tenants[0].key)
            assert await placement(tenants[0].key) == a_first  # sticky within the tenant
            assert len(set(a_first)) == 2
            # Unscoped, b's 16 sessions would land exactly where a's did (odds 2^-16 if scoped).
            assert await placement(tenants[1].key) != a_first
    finally:
        for fake in fakes:
            await fake.stop()
