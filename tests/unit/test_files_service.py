"""FileService against a real store (SQLite and PostgreSQL) and a local file storage: limits,
pagination, tenant isolation, and bytes and rows kept together."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.batch.files import FileLimits, FileService, check_batch_input
from tidegate.batch.storage import FileStorageError, LocalFileStorage
from tidegate.config import BatchConfig
from tidegate.errors import InvalidRequestError, NotFoundError, PayloadTooLargeError
from tidegate.protocol.files import FileOrder
from tidegate.store.models import StoredFile
from tidegate.tenancy.tenants import TenantService

Sessions = async_sessionmaker[AsyncSession]
LINE = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'


def service(sessions: Sessions, root: Path, **config: int) -> FileService:
    return FileService(
        sessions=sessions, storage=LocalFileStorage(root), config=BatchConfig(**config)
    )


async def tenant(sessions: Sessions, name: str, **settings: int) -> str:
    return (await TenantService(sessions=sessions).create(name, settings=settings)).id


async def count_rows(sessions: Sessions) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(StoredFile)) or 0)


async def test_create_get_content_delete(sessions: Sessions, tmp_path: Path) -> None:
    files = service(sessions, tmp_path)
    tenant_id = await tenant(sessions, "a")
    data = LINE * 3 + b"\n  \n"
    row = await files.create(tenant_id, "dir/in.jsonl", "batch", data)
    assert row.id.startswith("file-") and len(row.id) == 29
    assert (row.filename, row.bytes, row.line_count, row.purpose) == (
        "in.jsonl",
        len(data),
        3,
        "batch",
    )
    assert (await files.get(tenant_id, row.id)).storage_key == row.storage_key
    assert await files.content(tenant_id, row.id) == data
    assert (tmp_path / tenant_id / row.id).read_bytes() == data
    await files.delete(tenant_id, row.id)
    assert not (tmp_path / tenant_id / row.id).exists()
    assert await count_rows(sessions) == 0
    with pytest.raises(NotFoundError):
        await files.get(tenant_id, row.id)


async def test_another_tenants_file_is_answered_like_a_missing_one(
    sessions: Sessions, tmp_path: Path
) -> None:
    files = service(sessions, tmp_path)
    a, b = await tenant(sessions, "a"), await tenant(sessions, "b")
    theirs = await files.create(b, "x.jsonl", "batch", LINE)
    missing = "file-" + "0" * 24
    for call in (files.get, files.content, files.delete):
        with pytest.raises(NotFoundError) as foreign:
            await call(a, theirs.id)
        with pytest.raises(NotFoundError) as absent:
            await call(a, missing)
        assert foreign.value.message.replace(theirs.id, "ID") == absent.value.message.replace(
            missing, "ID"
        )
        assert (foreign.value.param, foreign.value.code) == (absent.value.param, absent.value.code)
    with pytest.raises(InvalidRequestError) as foreign_after:
        await files.list(a, after=theirs.id)
    with pytest.raises(InvalidRequestError) as absent_after:
        await files.list(a, after=missing)
    assert foreign_after.value.message.replace(theirs.id, "ID") == (
        absent_after.value.message.replace(missing, "ID")
    )
    assert await files.content(b, theirs.id) == LINE  # untouched


async def test_list_pages_newest_first_and_oldest_first(sessions: Sessions, tmp_path: Path) -> None:
    files = service(sessions, tmp_path)
    a, b = await tenant(sessions, "a"), await tenant(sessions, "b")
    made = [await files.create(a, f"{i}.jsonl", "batch", LINE) for i in range(5)]
    await files.create(b, "other.jsonl", "batch", LINE)
    output = await files.create_output(a, "out.jsonl", b"")
    ids = [row.id for row in made]

    async def walk(order: FileOrder, purpose: str | None) -> list[str]:
        seen: list[str] = []
        after = None
        while True:
            page = await files.list(a, purpose=purpose, after=after, limit=2, order=order)
            seen += [row.id for row in page.files]
            if not page.has_more:
                return seen
            after = page.files[-1].id

    assert await walk("asc", "batch") == ids
    assert await walk("desc", "batch") == ids[::-1]
    assert await walk("desc", None) == [output.id, *ids[::-1]]
    assert [r.id for r in (await files.list(a, purpose="batch_output")).files] == [output.id]
    for bad in (0, 10_001):
        with pytest.raises(InvalidRequestError):
            await files.list(a, limit=bad)


async def test_limits_from_config_and_tenant_policy(sessions: Sessions, tmp_path: Path) -> None:
    files = service(sessions, tmp_path, max_file_bytes=len(LINE) * 3, max_file_lines=2)
    default = await tenant(sessions, "default")
    roomy = await tenant(sessions, "roomy", max_batch_file_bytes=10_000, max_batch_file_lines=50)
    assert files.limits_for((await TenantService(sessions=sessions).get(roomy)).settings) == (
        FileLimits(max_bytes=10_000, max_lines=50)
    )
    await files.create(default, "ok.jsonl", "batch", LINE * 2)
    with pytest.raises(InvalidRequestError) as lines:
        await files.create(default, "three.jsonl", "batch", LINE * 3)
    assert lines.value.code == "too_many_lines" and "at most 2" in lines.value.message
    with pytest.raises(PayloadTooLargeError) as size:
        await files.create(default, "big.jsonl", "batch", LINE * 4)
    assert size.value.status == 413 and "max_batch_file_bytes" in size.value.message
    await files.create(roomy, "roomy.jsonl", "batch", LINE * 40)
    assert await count_rows(sessions) == 2
    # output files written by tidegate are not limited
    await files.create_output(default, "out.jsonl", LINE * 10)


async def test_bad_uploads_store_nothing(sessions: Sessions, tmp_path: Path) -> None:
    files = service(sessions, tmp_path)
    a = await tenant(sessions, "a")
    with pytest.raises(InvalidRequestError, match="purpose 'batch'"):
        await files.create(a, "x.jsonl", "fine-tune", LINE)
    with pytest.raises(InvalidRequestError, match="Line 2 .* not valid UTF-8"):
        await files.create(a, "x.jsonl", "batch", LINE + b'{"a": "\xff"}\n')
    with pytest.raises(InvalidRequestError, match="empty"):
        await files.create(a, "x.jsonl", "batch", b"\n \n")
    with pytest.raises(InvalidRequestError, match="filename"):
        await files.create(a, "", "batch", LINE)
    assert await count_rows(sessions) == 0
    assert not tmp_path.exists() or not any(tmp_path.rglob("file-*"))


async def test_no_row_without_content(sessions: Sessions, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"")
    files = service(sessions, blocker)
    a = await tenant(sessions, "a")
    with pytest.raises(FileStorageError):
        await files.create(a, "x.jsonl", "batch", LINE)
    assert await count_rows(sessions) == 0


async def test_content_is_removed_when_the_row_cannot_be_written(
    sessions: Sessions, tmp_path: Path
) -> None:
    files = service(sessions, tmp_path / "files")
    with pytest.raises(Exception):  # noqa: B017 - the store refuses a file of no tenant
        await files.create_output("ten_missing", "out.jsonl", LINE)
    assert not any((tmp_path / "files").rglob("file-*"))


def test_line_counting() -> None:
    limits = FileLimits(max_bytes=1 << 20, max_lines=10)
    assert check_batch_input(LINE, limits) == 1
    assert check_batch_input(LINE.rstrip(b"\n"), limits) == 1
    assert check_batch_input(LINE.replace(b"\n", b"\r\n") * 3 + b"\r\n", limits) == 3
    # U+2028 is a line break for str.splitlines but legal inside a JSON string: one line
    assert check_batch_input('{"a": "x\u2028y"}\n'.encode(), limits) == 1
    assert check_batch_input(b"\n\n" + LINE + b"\n\n", limits) == 1
