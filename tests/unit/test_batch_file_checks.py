"""Batch input files checked as a stream: a line larger than a request body is refused with its
line number (read with a bound, so a file without newlines never becomes one huge line), and
an upload given as an open file is streamed to the storage."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.batch.files import FileLimits, FileService, check_batch_input
from tidegate.batch.storage import LocalFileStorage
from tidegate.config import BatchConfig
from tidegate.errors import InvalidRequestError
from tidegate.tenancy.tenants import TenantService

LINE = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'
LIMITS = FileLimits(max_bytes=10 << 20, max_lines=100, max_line_bytes=1000)


def test_a_line_over_the_request_limit_is_refused_with_its_number() -> None:
    data = LINE * 2 + b'{"x": "' + b"y" * 2000 + b'"}\n' + LINE
    with pytest.raises(InvalidRequestError) as refused:
        check_batch_input(data, LIMITS)
    assert refused.value.code == "line_too_large" and "Line 3 " in refused.value.message
    # Exactly at the limit, with either line ending, is fine.
    exact = b"{" + b" " * (1000 - 2) + b"}"
    assert check_batch_input(exact + b"\r\n" + exact + b"\n" + exact, LIMITS) == 3


def test_a_file_without_newlines_is_read_in_bounded_pieces() -> None:
    class Counting(io.BytesIO):
        largest = 0

        def readline(self, size: int | None = -1) -> bytes:
            line = super().readline(size)
            Counting.largest = max(Counting.largest, len(line))
            return line

    with pytest.raises(InvalidRequestError) as refused:
        check_batch_input(Counting(b"x" * (5 << 20)), LIMITS)
    assert refused.value.code == "line_too_large" and "Line 1 " in refused.value.message
    assert Counting.largest <= 1002


async def test_an_open_file_is_checked_and_streamed_to_storage(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    files = FileService(
        sessions=sessions,
        storage=LocalFileStorage(tmp_path),
        config=BatchConfig(),
        max_line_bytes=1000,
    )
    tenant = (await TenantService(sessions=sessions).create("t")).id
    with tempfile.TemporaryFile() as upload:
        upload.write(LINE * 3000)
        row = await files.create(tenant, "in.jsonl", "batch", upload)  # position at its end
    assert (row.bytes, row.line_count) == (len(LINE) * 3000, 3000)
    assert await files.content(tenant, row.id) == LINE * 3000
    with tempfile.TemporaryFile() as upload, pytest.raises(InvalidRequestError):
        upload.write(LINE + b"z" * 1001 + b"\n")
        await files.create(tenant, "bad.jsonl", "batch", upload)
