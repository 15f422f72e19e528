"""The OpenAI Files API over real HTTP with the official `openai` client: upload, list with
pagination, retrieve, content, delete; size and line limits from the config and the tenant's
policy; another tenant's file answered exactly like a missing one. On SQLite and PostgreSQL,
and once with S3 storage on a real moto server."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.support.gateway import ADMIN_KEY, MemberKey, RunningGateway, auth, run_gateway
from tests.support.gateway import create_member as _create_member
from tests.support.s3 import ACCESS_KEY_ID, SECRET_ACCESS_KEY, S3Server, moto_server
from tidegate_testing.fake_server import FakeUpstream

MISSING = "file-" + "0" * 24


def jsonl(lines: int) -> bytes:
    return b"".join(
        orjson.dumps(
            {
                "custom_id": f"req-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]},
            }
        )
        + b"\n"
        for i in range(lines)
    )


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def client(gateway: RunningGateway, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)


async def create_member(gateway: RunningGateway, name: str, **settings: Any) -> MemberKey:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        return await _create_member(http, name, settings)


@pytest.fixture
async def files_gateway(
    tmp_path: Path, fake: FakeUpstream, store_url: str
) -> AsyncIterator[RunningGateway]:
    batch = {"max_file_bytes": 20_000, "max_file_lines": 50}
    async with run_gateway(
        tmp_path, upstreams=[fake], store_url=store_url, sections={"batch": batch}
    ) as running:
        yield running


async def test_openai_client_round_trip(files_gateway: RunningGateway, tmp_path: Path) -> None:
    member = await create_member(files_gateway, "team")
    api = client(files_gateway, member.key)
    data = jsonl(3)
    with write(tmp_path, "requests.jsonl", data).open("rb") as handle:
        created = await api.files.create(file=handle, purpose="batch")
    assert created.id.startswith("file-")
    assert (created.object, created.bytes, created.filename) == (
        "file",
        len(data),
        "requests.jsonl",
    )
    assert (created.purpose, created.status) == ("batch", "processed")
    assert abs(created.created_at - __import__("time").time()) < 60

    retrieved = await api.files.retrieve(created.id)
    assert retrieved.model_dump() == created.model_dump()
    assert (await api.files.content(created.id)).content == data

    deleted = await api.files.delete(created.id)
    assert (deleted.id, deleted.deleted) == (created.id, True)
    with pytest.raises(openai.NotFoundError):
        await api.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        await api.files.content(created.id)


async def test_list_paginates_newest_first(files_gateway: RunningGateway, tmp_path: Path) -> None:
    member = await create_member(files_gateway, "team")
    other = await create_member(files_gateway, "other")
    api = client(files_gateway, member.key)
    ids = []
    for i in range(5):
        path = write(tmp_path, f"{i}.jsonl", jsonl(1))
        ids.append((await api.files.create(file=path, purpose="batch")).id)
    await client(files_gateway, other.key).files.create(
        file=write(tmp_path, "theirs.jsonl", jsonl(1)), purpose="batch"
    )

    first = await api.files.list(limit=2)
    assert [f.id for f in first.data] == ids[::-1][:2] and first.has_more
    walked = [f.id async for f in api.files.list(limit=2)]  # follows `after` page by page
    assert walked == ids[::-1]
    assert [f.id async for f in api.files.list(limit=3, order="asc")] == ids
    assert [f.id async for f in api.files.list(purpose="batch_output")] == []
    # the operator's key sees only its own tenant's files here too
    assert [f.id async for f in client(files_gateway, ADMIN_KEY).files.list()] == []


async def test_limits_from_config_and_tenant(files_gateway: RunningGateway, tmp_path: Path) -> None:
    default = client(files_gateway, (await create_member(files_gateway, "default")).key)
    strict = client(
        files_gateway,
        (await create_member(files_gateway, "strict", max_batch_file_lines=2)).key,
    )
    roomy = client(
        files_gateway,
        (
            await create_member(
                files_gateway, "roomy", max_batch_file_bytes=100_000, max_batch_file_lines=500
            )
        ).key,
    )
    lines_51 = write(tmp_path, "51.jsonl", jsonl(51))
    with pytest.raises(openai.BadRequestError) as too_many:
        await default.files.create(file=lines_51, purpose="batch")
    assert too_many.value.code == "too_many_lines"
    assert (
        "at most 50" in too_many.value.message and "max_batch_file_lines" in too_many.value.message
    )
    with pytest.raises(openai.BadRequestError, match="at most 2"):
        await strict.files.create(file=write(tmp_path, "3.jsonl", jsonl(3)), purpose="batch")

    big = write(tmp_path, "big.jsonl", jsonl(200))  # about 28 KB > 20,000 bytes
    with pytest.raises(openai.APIStatusError) as too_big:
        await default.files.create(file=big, purpose="batch")
    assert too_big.value.status_code == 413 and too_big.value.code == "file_too_large"
    assert "20000 bytes" in too_big.value.message
    created = await roomy.files.create(file=big, purpose="batch")
    assert created.bytes == big.stat().st_size

    with pytest.raises(openai.BadRequestError, match="purpose 'batch'"):
        await default.files.create(file=lines_51, purpose="fine-tune")
    with pytest.raises(openai.BadRequestError, match="UTF-8"):
        await default.files.create(file=write(tmp_path, "bad", b"\xff\xfe\n"), purpose="batch")


def multipart(boundary: str, data: bytes) -> bytes:
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.jsonl"'
            "\r\nContent-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )


async def test_upload_is_read_with_a_cap(files_gateway: RunningGateway) -> None:
    """Without a Content-Length (chunked) the body is cut off at the cap while it streams in
    (the refusal names the cap, not the size of a file read to its end)."""
    member = await create_member(files_gateway, "team")
    boundary = secrets.token_hex(8)
    headers = {**member.headers, "content-type": f"multipart/form-data; boundary={boundary}"}

    async def chunks(body: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(body), 16_384):
            yield body[start : start + 16_384]

    async with httpx.AsyncClient(base_url=files_gateway.url, timeout=30) as http:
        small = multipart(boundary, jsonl(2))
        accepted = await http.post("/v1/files", content=chunks(small), headers=headers)
        assert accepted.status_code == 200, accepted.text
        huge = multipart(boundary, jsonl(1) * 1_000)  # about 140 KB: past the 84 KiB cap
        for body in (chunks(huge), huge):  # chunked, then with a Content-Length
            refused = await http.post("/v1/files", content=body, headers=headers)
            assert refused.status_code == 413, refused.text
            error = refused.json()["error"]
            assert error["code"] == "file_too_large"
            assert error["message"].startswith("The upload is larger than 20000 bytes")

        as_json = await http.post("/v1/files", json={"purpose": "batch"}, headers=member.headers)
        assert as_json.status_code == 400
        assert "multipart/form-data" in as_json.json()["error"]["message"]
        no_file = await http.post(
            "/v1/files", data={"purpose": "batch"}, files={"other": b"x"}, headers=member.headers
        )
        assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"
        assert (await http.get("/v1/files")).status_code == 401


async def test_another_tenants_file_is_answered_like_a_missing_one(
    files_gateway: RunningGateway, tmp_path: Path
) -> None:
    owner = await create_member(files_gateway, "owner")
    intruder = await create_member(files_gateway, "intruder")
    theirs = await client(files_gateway, owner.key).files.create(
        file=write(tmp_path, "x.jsonl", jsonl(1)), purpose="batch"
    )
    calls = [
        ("GET", "/v1/files/{id}", None),
        ("GET", "/v1/files/{id}/content", None),
        ("DELETE", "/v1/files/{id}", None),
        ("GET", "/v1/files", "after"),
    ]
    async with httpx.AsyncClient(base_url=files_gateway.url, timeout=30) as http:
        for method, path, param in calls:
            answers = []
            for file_id in (theirs.id, MISSING):
                response = await http.request(
                    method,
                    path.format(id=file_id),
                    params={param: file_id} if param else None,
                    headers=auth(intruder.key),
                )
                answers.append((response.status_code, response.text.replace(file_id, "ID")))
            assert answers[0] == answers[1], (method, path)
            assert answers[0][0] == (400 if param else 404)
    # and the file is still there for its owner
    assert (await client(files_gateway, owner.key).files.content(theirs.id)).content == jsonl(1)


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


async def test_files_on_s3_storage(tmp_path: Path, fake: FakeUpstream, s3_server: S3Server) -> None:
    bucket = s3_server.new_bucket()
    batch = {
        "storage": "s3",
        "s3_bucket": bucket,
        "s3_prefix": "gw/",
        "s3_endpoint_url": s3_server.endpoint_url,
        "s3_access_key_id": ACCESS_KEY_ID,
        "s3_secret_access_key": SECRET_ACCESS_KEY,
    }
    async with run_gateway(tmp_path, upstreams=[fake], sections={"batch": batch}) as gateway:
        member = await create_member(gateway, "team")
        api = client(gateway, member.key)
        data = jsonl(4)
        created = await api.files.create(file=write(tmp_path, "in.jsonl", data), purpose="batch")
        s3 = s3_server.client()
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]  # type: ignore[attr-defined]
        assert keys == [f"gw/{member.tenant_id}/{created.id}"]
        assert (await api.files.content(created.id)).content == data
        await api.files.delete(created.id)
        assert s3.list_objects_v2(Bucket=bucket).get("Contents", []) == []  # type: ignore[attr-defined]


async def test_files_api_off_when_batch_is_disabled(tmp_path: Path, fake: FakeUpstream) -> None:
    sections = {"batch": {"enabled": False}}
    async with run_gateway(tmp_path, upstreams=[fake], sections=sections) as gateway:
        member = await create_member(gateway, "team")
        with pytest.raises(openai.NotFoundError) as off:
            await client(gateway, member.key).files.list()
        assert off.value.code == "files_disabled" and "batch.enabled" in off.value.message
