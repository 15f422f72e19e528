"""What the batch service and runner need of the Files API (``batch.files.FileService``).

Typed as a protocol so the runner depends on these calls only, and tests of the runner can
stand any implementation in for it.
"""

from __future__ import annotations

from typing import Protocol

from tidegate.store.models import StoredFile


class BatchFiles(Protocol):
    async def get(self, tenant_id: str, file_id: str) -> StoredFile:
        """The file's row; NotFoundError for a missing id or another tenant's."""
        ...

    async def content(self, tenant_id: str, file_id: str) -> bytes:
        """The file's bytes; NotFoundError for a missing id or another tenant's."""
        ...

    async def create_output(self, tenant_id: str, filename: str, data: bytes) -> StoredFile:
        """Store a batch_output file."""
        ...

    async def delete(self, tenant_id: str, file_id: str) -> StoredFile:
        """Delete a file (its row, then its bytes)."""
        ...
