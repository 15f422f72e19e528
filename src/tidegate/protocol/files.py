"""OpenAI Files API wire shapes: the File object, a page of them, a deletion; no I/O.

{"id": "file-…", "object": "file", "bytes": 120, "created_at": 1700000000,
 "filename": "input.jsonl", "purpose": "batch", "status": "processed"}
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal, TypedDict

__all__ = [
    "FileDeleted",
    "FileList",
    "FileObject",
    "FileOrder",
    "FilePurpose",
    "UPLOAD_PURPOSES",
    "file_deleted",
    "file_list",
    "file_object",
]

FilePurpose = Literal["batch", "batch_output"]
"""``batch``: an uploaded batch input file; ``batch_output``: a batch's output or error file."""
UPLOAD_PURPOSES: tuple[str, ...] = ("batch",)
"""The purposes a client may upload a file with."""
FileOrder = Literal["asc", "desc"]


class FileObject(TypedDict):
    id: str
    object: Literal["file"]
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["processed"]
    status_details: None


class FileList(TypedDict):
    object: Literal["list"]
    data: list[FileObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class FileDeleted(TypedDict):
    id: str
    object: Literal["file"]
    deleted: bool


def file_object(
    *, id: str, size: int, created_at: datetime, filename: str, purpose: str
) -> FileObject:
    return {
        "id": id,
        "object": "file",
        "bytes": size,
        "created_at": int(created_at.timestamp()),
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
        "status_details": None,
    }


def file_list(data: Sequence[FileObject], *, has_more: bool) -> FileList:
    return {
        "object": "list",
        "data": list(data),
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def file_deleted(file_id: str) -> FileDeleted:
    return {"id": file_id, "object": "file", "deleted": True}
