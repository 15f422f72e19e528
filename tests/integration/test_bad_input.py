"""Malformed input is a 400 (or 413) naming the field, on SQLite and PostgreSQL, and never
reaches the upstream or the store; every size and count cap holds before the work it protects;
a genuine internal error is a logged 500.

Regressions of issue 13 (findings 4 and 5): ``"max_tokens": "4"`` was a 500, NUL characters in
ids, names and cursors were 500s on PostgreSQL, a cursor past 64 bits was a 500 on both stores,
a malformed multipart upload was a plain-text 500, ``/v1/completions`` forwarded any number of
prompts, ``POST /v1/batches`` read its body whole, and a batch line larger than
``server.max_body_bytes`` was accepted.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text

from tests.support.gateway import (
    ADMIN_KEY,
    MemberKey,
    RunningGateway,
    auth,
    create_member,
    run_gateway,
)
from tidegate.store import create_engine
from tidegate_testing.fake_server import FakeUpstream

MODEL = "fake-model"
CHAT: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
TEXT: dict[str, Any] = {"model": MODEL, "prompt": "hi"}
BATCH = {"poll_interval_s": 0.05, "lease_s": 5}
MAX_BODY = 64 * 1024


@pytest.fixture
async def stack(
    tmp_path: Path, fake: FakeUpstream, store_url: str
) -> AsyncIterator[tuple[RunningGateway, httpx.AsyncClient, MemberKey]]:
    async with (
        run_gateway(
            tmp_path,
            upstreams=[fake],
            store_url=store_url,
            sections={"batch": BATCH},
            max_body_bytes=MAX_BODY,
        ) as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=30) as http,
    ):
        yield gateway, http, await create_member(http, "team")


def assert_refused(response: httpx.Response, param: str | None, status: int = 400) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, error
    assert len(error["message"]) > 20


MEMBER_CASES: list[tuple[str, str, dict[str, Any], str]] = [
    ("POST", "/v1/chat/completions", {"json": {**CHAT, "max_tokens": "4"}}, "max_tokens"),
    (
        "POST",
        "/v1/chat/completions",
        {"json": {**CHAT, "max_completion_tokens": "4"}},
        "max_completion_tokens",
    ),
    ("POST", "/v1/completions", {"json": {**TEXT, "max_tokens": "4"}}, "max_tokens"),
    (
        "POST",
        "/v1/completions",
        {"json": {**TEXT, "max_completion_tokens": "4"}},
        "max_completion_tokens",
    ),
    ("POST", "/v1/completions", {"json": {**TEXT, "stream": "true"}}, "stream"),
    ("POST", "/v1/completions", {"json": {**TEXT, "seed": 2**64}}, "seed"),
    ("POST", "/v1/chat/completions", {"json": {**CHAT, "n": "2"}}, "n"),
    ("GET", "/v1/files/file-%00abc", {}, "file_id"),
    ("GET", "/v1/files", {"params": {"after": "file-\x00"}}, "after"),
    ("GET", "/v1/files", {"params": {"limit": str(2**70)}}, "limit"),
    ("GET", "/v1/batches/batch_%00", {}, "batch_id"),
    ("POST", "/v1/batches/batch_%00/cancel", {}, "batch_id"),
    ("GET", "/v1/batches", {"params": {"after": "batch_\x00"}}, "after"),
    ("GET", "/v1/batches", {"params": {"limit": "9" * 30}}, "limit"),
    (
        "POST",
        "/v1/batches",
        {
            "json": {
                "input_file_id": "file-\x00",
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            }
        },
        "input_file_id",
    ),
    (
        "POST",
        "/v1/files",
        {
            "content": b"garbage\r\n--xx--\r\n",
            "headers": {"content-type": "multipart/form-data; boundary=xx"},
        },
        "file",
    ),
    (
        "POST",
        "/v1/files",
        {
            "content": b"--xx\r\nno header line\r\n\r\nabc\r\n--xx--\r\n",
            "headers": {"content-type": "multipart/form-data; boundary=xx"},
        },
        "file",
    ),
]
ADMIN_CASES: list[tuple[str, str, dict[str, Any], str]] = [
    ("GET", "/admin/tenants/ten_%00", {}, "tenant_id"),
    ("PATCH", "/admin/tenants/ten_%00", {"json": {"name": "x"}}, "tenant_id"),
    ("GET", "/admin/tenants", {"params": {"after": "\x00"}}, "after"),
    ("GET", "/admin/keys/key_%00", {}, "key_id"),
    ("GET", "/admin/keys", {"params": {"tenant_id": "ten\x00"}}, "tenant_id"),
    ("GET", "/admin/audit", {"params": {"after": str(2**64)}}, "after"),
    ("GET", "/admin/audit", {"params": {"after": str(-(2**70))}}, "after"),
    ("GET", "/admin/usage", {"params": {"tenant_id": "ten\x00"}}, "tenant_id"),
    ("GET", "/admin/usage/records", {"params": {"after": "cur\x00"}}, "after"),
    ("GET", "/admin/usage/records", {"params": {"limit": "²"}}, "limit"),
    ("POST", "/admin/tenants", {"json": {"name": "a\x00b"}}, "name"),
    (
        "POST",
        "/admin/tenants",
        {"json": {"name": "t", "settings": {"allowed_models": ["\x00"]}}},
        "settings.allowed_models.0",
    ),
    ("POST", "/admin/keys", {"json": {"name": "k", "tenant_id": "ten_\x00"}}, "tenant_id"),
    (
        "POST",
        "/admin/tenants",
        {"json": {"name": "t2", "settings": {"prompt_retention_days": 2**70}}},
        "settings.prompt_retention_days",
    ),
    (
        "POST",
        "/admin/tenants",
        {"json": {"name": "t3", "settings": {"limits": {"requests_per_minute": 2**64}}}},
        "settings.limits.requests_per_minute",
    ),
    ("POST", "/admin/keys", {"json": {"name": "k\x00"}}, "name"),
]


async def test_malformed_values_are_400s_naming_the_field(
    stack: tuple[RunningGateway, httpx.AsyncClient, MemberKey], fake: FakeUpstream
) -> None:
    _, http, member = stack
    cases = [(case, member.headers) for case in MEMBER_CASES]
    cases += [(case, auth(ADMIN_KEY)) for case in ADMIN_CASES]
    for (method, path, options, param), headers in cases:
        options = dict(options)
        headers = {**headers, **options.pop("headers", {})}
        response = await http.request(method, path, headers=headers, **options)
        assert_refused(response, param)
    assert fake.requests == []
    # The store took none of it, and still answers.
    tenants = await http.get("/admin/tenants", headers=auth(ADMIN_KEY))
    assert tenants.status_code == 200
    assert {t["name"] for t in tenants.json()["data"]} >= {"team"}
    assert all("\x00" not in t["name"] for t in tenants.json()["data"])


async def test_an_internal_error_is_a_logged_500_with_the_request_id(
    stack: tuple[RunningGateway, httpx.AsyncClient, MemberKey],
    store_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, http, _ = stack
    postgres = store_url.startswith("postgresql")
    # Genuine faults: a table gone under PostgreSQL (a StoreError), a row SQLite cannot read
    # back (an exception from inside SQLAlchemy's result processing: a bug-shaped error).
    fault = (
        "DROP TABLE tenants CASCADE" if postgres else "UPDATE tenants SET created_at = 'garbage'"
    )
    engine = create_engine(store_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(fault))
    finally:
        await engine.dispose()
    caplog.set_level(logging.ERROR, logger="tidegate.api.errors")
    response = await http.get("/admin/tenants", headers=auth(ADMIN_KEY))
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["type"] == "internal_error"
    found = re.search(r"req_[0-9a-f]+", error["message"])
    request_id = response.headers.get("x-tidegate-request-id") or (found and found.group())
    assert request_id
    logged = [r for r in caplog.records if request_id in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None


async def test_completions_refuse_more_prompts_than_the_cap(
    gateway: RunningGateway, fake: FakeUpstream
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        for prompt in (["x"] * 100_000, [[1, 2]] * 129):
            response = await http.post(
                "/v1/completions", json={**TEXT, "prompt": prompt}, headers=auth(ADMIN_KEY)
            )
            assert_refused(response, "prompt")
            assert response.json()["error"]["code"] == "too_many_prompts"
        ok = await http.post(
            "/v1/completions", json={**TEXT, "prompt": ["x"] * 128}, headers=auth(ADMIN_KEY)
        )
        assert ok.status_code == 200, ok.text
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    ("change", "param", "code"),
    [
        (
            {"messages": [{"role": "user", "content": "x"}] * 100_000},
            "messages",
            "too_many_messages",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}] * 100_000}]},
            "messages",
            "too_many_content_parts",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f"}}] * 50_000},
            "tools",
            "too_many_tools",
        ),
    ],
)
async def test_huge_lists_are_refused_by_their_count(
    gateway: RunningGateway, fake: FakeUpstream, change: dict[str, Any], param: str, code: str
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        response = await http.post(
            "/v1/chat/completions", json={**CHAT, **change}, headers=auth(ADMIN_KEY)
        )
    assert_refused(response, param)
    assert response.json()["error"]["code"] == code
    assert fake.requests == []


async def _chunks(total: int, piece: int = 64 * 1024) -> AsyncIterator[bytes]:
    """A body sent chunked (no Content-Length): the cap must hold while it is read."""
    yield b'{"model": "fake-model", "metadata": {"k": "'
    sent = 0
    while sent < total:
        yield b"x" * piece
        sent += piece
        await asyncio.sleep(0)
    yield b'"}}'


@pytest.mark.parametrize(
    ("path", "key", "total"),
    [
        ("/v1/chat/completions", "member", 5 * 1024 * 1024),
        ("/v1/batches", "member", 2 * 1024 * 1024),
        ("/admin/tenants", "admin", 2 * 1024 * 1024),
        ("/admin/keys", "admin", 2 * 1024 * 1024),
    ],
)
async def test_body_limits_hold_for_chunked_bodies(
    tmp_path: Path, fake: FakeUpstream, path: str, key: str, total: int
) -> None:
    async with (
        run_gateway(tmp_path, upstreams=[fake], sections={"batch": BATCH}) as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=30) as http,
    ):
        member = await create_member(http, "team")
        headers = member.headers if key == "member" else auth(ADMIN_KEY)
        response = await http.post(path, content=_chunks(total), headers=headers)
        assert "content-length" not in response.request.headers
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "request_too_large"
    assert fake.requests == []


def _line(custom_id: str, **body: Any) -> bytes:
    request = {**CHAT, "max_tokens": 4, **body}
    line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions"}
    return orjson.dumps({**line, "body": request}) + b"\n"


async def test_a_batch_line_larger_than_a_request_body_is_refused_with_its_line_number(
    stack: tuple[RunningGateway, httpx.AsyncClient, MemberKey],
) -> None:
    _, http, member = stack
    data = _line("a") + _line("big", user="x" * MAX_BODY) + _line("c")
    response = await http.post(
        "/v1/files",
        files={"file": ("in.jsonl", data)},
        data={"purpose": "batch"},
        headers=member.headers,
    )
    assert_refused(response, "file")
    error = response.json()["error"]
    assert error["code"] == "line_too_large" and "Line 2 " in error["message"]


async def test_batch_lines_with_mistyped_fields_fail_the_batch_with_line_numbers(
    stack: tuple[RunningGateway, httpx.AsyncClient, MemberKey], fake: FakeUpstream
) -> None:
    _, http, member = stack
    data = (
        _line("ok")
        + _line("a", max_tokens="4")
        + _line("b", max_completion_tokens="4")
        + _line("c", stream="false")
        + _line("d", messages=[{"role": "user", "content": "x"}] * 600)
        + orjson.dumps({"custom_id": "e\x00", "method": "POST", "url": "/v1/chat/completions"})
    )
    uploaded = await http.post(
        "/v1/files",
        files={"file": ("in.jsonl", data)},
        data={"purpose": "batch"},
        headers=member.headers,
    )
    assert uploaded.status_code == 200, uploaded.text
    body = {
        "input_file_id": uploaded.json()["id"],
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    created = await http.post("/v1/batches", json=body, headers=member.headers)
    assert created.status_code == 200, created.text
    deadline = time.monotonic() + 20
    while True:
        batch = await http.get(f"/v1/batches/{created.json()['id']}", headers=member.headers)
        assert batch.status_code == 200, batch.text
        if batch.json()["status"] != "validating":
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert batch.json()["status"] == "failed"
    by_line = {e["line"]: e for e in batch.json()["errors"]["data"]}
    assert {n: by_line[n]["param"] for n in (2, 3, 4, 5, 6)} == {
        2: "max_tokens",
        3: "max_completion_tokens",
        4: "stream",
        5: "messages",
        6: "custom_id",
    }
    assert by_line[5]["code"] == "too_many_messages"
    assert fake.requests == []
