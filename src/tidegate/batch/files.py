"""Files of the OpenAI Files API: uploads checked against the tenant's limits, stored in the file
storage and indexed in the store.

Every call names the tenant it acts for; a file of another tenant is answered exactly like a
missing one, so file ids cannot be probed across tenants. Bytes are stored before the row that
lists them is written (a crash in between leaves an unlisted object, never a row without
content); deleting removes the row first, then the bytes.

A batch input file (purpose ``batch``) must be UTF-8 JSON Lines. Its size and its number of
non-empty lines are limited by the tenant's ``max_batch_file_bytes`` / ``max_batch_file_lines``,
else by ``batch.max_file_bytes`` / ``batch.max_file_lines``; no line may be larger than a request
body (``server.max_body_bytes``). These checks read every byte, so they run in a worker thread,
never on the event loop. Whether each line is a valid request is checked when a batch is created
from it, with line numbers.
"""

from __future__ import annotations

import asyncio
import io
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.batch.storage import FileStorage
from tidegate.config import BatchConfig
from tidegate.errors import InvalidRequestError, NotFoundError, PayloadTooLargeError
from tidegate.protocol.files import UPLOAD_PURPOSES, FileOrder
from tidegate.store.db import transaction
from tidegate.store.models import StoredFile, Tenant
from tidegate.tenancy.policy import TenantSettings

__all__ = ["FileLimits", "FilePage", "FileService", "MAX_LIST_LIMIT", "file_not_found"]

log = logging.getLogger(__name__)

MAX_LIST_LIMIT = 10_000
"""The largest page a list call returns (OpenAI's bound for files)."""
MAX_FILENAME_CHARS = 255


@dataclass(frozen=True, slots=True)
class FileLimits:
    """What one batch input file of a tenant may hold."""

    max_bytes: int
    max_lines: int
    max_line_bytes: int | None = None
    """The largest line (server.max_body_bytes); None: not checked."""


@dataclass(frozen=True, slots=True)
class FilePage:
    files: list[StoredFile]
    has_more: bool


def file_not_found(file_id: str) -> NotFoundError:
    # The same answer for a missing file and one of another tenant.
    return NotFoundError(f"No file with id '{file_id}'.", param="file_id")


class FileService:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        storage: FileStorage,
        config: BatchConfig,
        max_line_bytes: int | None = None,
    ) -> None:
        """``max_line_bytes``: the largest line of an input file (server.max_body_bytes)."""
        self._sessions = sessions
        self._storage = storage
        self._config = config
        self._max_line_bytes = max_line_bytes

    @property
    def storage(self) -> FileStorage:
        return self._storage

    def limits_for(self, settings: TenantSettings) -> FileLimits:
        return FileLimits(
            max_bytes=settings.max_batch_file_bytes or self._config.max_file_bytes,
            max_lines=settings.max_batch_file_lines or self._config.max_file_lines,
            max_line_bytes=self._max_line_bytes,
        )

    async def tenant_limits(self, tenant_id: str) -> FileLimits:
        async with transaction(self._sessions, "read a tenant's file limits") as session:
            tenant = await session.get(Tenant, tenant_id)
        if tenant is None:
            raise NotFoundError(f"No tenant with id '{tenant_id}'.", param="tenant_id")
        return self.limits_for(TenantSettings.model_validate(tenant.settings))

    async def create(
        self,
        tenant_id: str,
        filename: str,
        purpose: str,
        data: bytes | IO[bytes],
        *,
        limits: FileLimits | None = None,
    ) -> StoredFile:
        """Check and store an uploaded file: its bytes, or an open binary file holding them
        (the API passes the upload's spooled temporary file, which is streamed to the storage
        and never read into memory whole). ``limits``: the tenant's, when the caller already
        has its policy (the API does); else they are read from the store."""
        if purpose not in UPLOAD_PURPOSES:
            raise InvalidRequestError(
                f"Invalid purpose '{purpose}': tidegate stores files for the Batch API only; "
                "upload with purpose 'batch'.",
                param="purpose",
                code="invalid_purpose",
            )
        name = _check_filename(filename)
        limits = limits or await self.tenant_limits(tenant_id)
        lines = await asyncio.to_thread(check_batch_input, data, limits)
        return await self._store(tenant_id, name, purpose, data, lines)

    async def create_output(self, tenant_id: str, filename: str, data: bytes) -> StoredFile:
        """Store a file tidegate wrote (a batch's output or error file): no limits apply."""
        lines = sum(1 for line in io.BytesIO(data) if line.strip())
        return await self._store(tenant_id, _check_filename(filename), "batch_output", data, lines)

    async def list(
        self,
        tenant_id: str,
        *,
        purpose: str | None = None,
        after: str | None = None,
        limit: int = 20,
        order: FileOrder = "desc",
    ) -> FilePage:
        """A page of the tenant's files, newest first (``order="asc"``: oldest first).
        ``after``: the last id of the previous page."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidRequestError(
                f"Invalid value for 'limit': {limit}; it must be between 1 and {MAX_LIST_LIMIT}.",
                param="limit",
            )
        if order not in ("asc", "desc"):
            raise InvalidRequestError(
                f"Invalid value for 'order': '{order}'; use 'asc' or 'desc'.", param="order"
            )
        columns = (StoredFile.created_at, StoredFile.id)
        ordering = [c.asc() if order == "asc" else c.desc() for c in columns]
        query = select(StoredFile).where(StoredFile.tenant_id == tenant_id)
        if purpose is not None:
            query = query.where(StoredFile.purpose == purpose)
        async with transaction(self._sessions, "list files") as session:
            if after is not None:
                last = await session.get(StoredFile, after)
                if last is None or last.tenant_id != tenant_id:
                    raise InvalidRequestError(
                        f"Invalid value for 'after': no file with id '{after}' in this list.",
                        param="after",
                    )
                query = query.where(_beyond(last, order))
            rows = list(await session.scalars(query.order_by(*ordering).limit(limit + 1)))
        return FilePage(files=rows[:limit], has_more=len(rows) > limit)

    async def get(self, tenant_id: str, file_id: str) -> StoredFile:
        async with transaction(self._sessions, "read a file") as session:
            return await _visible_file(session, tenant_id, file_id)

    async def content(self, tenant_id: str, file_id: str) -> bytes:
        row = await self.get(tenant_id, file_id)
        return await self._storage.get(row.storage_key)

    async def delete(self, tenant_id: str, file_id: str) -> StoredFile:
        """Delete the file's row, then its bytes (a failure there leaves only unlisted bytes)."""
        async with transaction(self._sessions, "delete a file") as session:
            row = await _visible_file(session, tenant_id, file_id)
            await session.delete(row)
        try:
            await self._storage.delete(row.storage_key)
        except Exception:  # the file is gone for every caller; the bytes are only a leak
            log.warning("could not delete the content of deleted file %s", file_id, exc_info=True)
        return row

    async def _store(
        self, tenant_id: str, filename: str, purpose: str, data: bytes | IO[bytes], lines: int
    ) -> StoredFile:
        file_id = "file-" + secrets.token_hex(12)
        key = f"{tenant_id}/{file_id}"
        if isinstance(data, bytes):
            size = len(data)
            await self._storage.put(key, data)
        else:
            size = _size(data)
            await self._storage.put_stream(key, data)
        row = StoredFile(
            id=file_id,
            tenant_id=tenant_id,
            purpose=purpose,
            filename=filename,
            bytes=size,
            line_count=lines,
            storage_key=key,
            created_at=datetime.now(UTC),
        )
        try:
            async with transaction(self._sessions, "store a file") as session:
                session.add(row)
        except BaseException:
            await _forget(self._storage, key)
            raise
        return row


def _size(source: IO[bytes]) -> int:
    size = source.seek(0, io.SEEK_END)
    source.seek(0)
    return size


def check_batch_input(data: bytes | IO[bytes], limits: FileLimits) -> int:
    """The number of non-empty lines of a batch input file (its bytes, or an open binary file
    read from its start), or the error that refuses it. Blocking: run it in a thread."""
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    size = _size(source)
    if size > limits.max_bytes:
        raise PayloadTooLargeError(
            f"The file is {size} bytes; a batch input file may hold at most "
            f"{limits.max_bytes} bytes. Split it into several files and batches, or ask the "
            "operator to raise the tenant's max_batch_file_bytes (or batch.max_file_bytes).",
            param="file",
            code="file_too_large",
        )
    lines = 0
    longest = limits.max_line_bytes
    # Lines are read with a bound, so a file without newlines is never one line in memory.
    chunk = -1 if longest is None else longest + 2
    for number, line in enumerate(iter(lambda: source.readline(chunk), b""), start=1):
        if longest is not None and len(line) > longest and len(line.rstrip(b"\r\n")) > longest:
            raise InvalidRequestError(
                f"Line {number} of the file is {len(line):,} bytes; one request may be at most "
                f"{longest:,} bytes (server.max_body_bytes). Shorten that request.",
                param="file",
                code="line_too_large",
            )
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequestError(
                f"Line {number} of the file is not valid UTF-8 (byte {exc.start + 1} of the "
                "line). A batch input file must be UTF-8 JSON Lines: one JSON request per line.",
                param="file",
                code="invalid_file_encoding",
            ) from exc
        if line.strip():
            lines += 1
            if lines > limits.max_lines:
                raise InvalidRequestError(
                    f"The file has more than {limits.max_lines} lines (requests); a batch input "
                    f"file may hold at most {limits.max_lines}. Split it into several files and "
                    "batches, or ask the operator to raise the tenant's max_batch_file_lines (or "
                    "batch.max_file_lines).",
                    param="file",
                    code="too_many_lines",
                )
    if lines == 0:
        raise InvalidRequestError(
            "The file is empty. A batch input file holds one JSON request per line.",
            param="file",
            code="empty_file",
        )
    return lines


def _check_filename(filename: str) -> str:
    name = filename.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not name:
        raise InvalidRequestError(
            "The uploaded file has no filename; send it as a multipart file part with one.",
            param="file",
        )
    if len(name) > MAX_FILENAME_CHARS or any(ord(char) < 32 for char in name):
        raise InvalidRequestError(
            f"Invalid filename: use at most {MAX_FILENAME_CHARS} printable characters.",
            param="file",
        )
    return name


def _beyond(last: StoredFile, order: FileOrder) -> ColumnElement[bool]:
    if order == "asc":
        return or_(
            StoredFile.created_at > last.created_at,
            and_(StoredFile.created_at == last.created_at, StoredFile.id > last.id),
        )
    return or_(
        StoredFile.created_at < last.created_at,
        and_(StoredFile.created_at == last.created_at, StoredFile.id < last.id),
    )


async def _visible_file(session: AsyncSession, tenant_id: str, file_id: str) -> StoredFile:
    row = await session.get(StoredFile, file_id)
    if row is None or row.tenant_id != tenant_id:
        raise file_not_found(file_id)
    return row


async def _forget(storage: FileStorage, key: str) -> None:
    try:
        await storage.delete(key)
    except Exception:
        log.warning("could not remove the content of unlisted file %s", key, exc_info=True)
