"""The OpenAI Files API, for any API key; a key sees only its own tenant's files.

HTTP only: authenticate the bearer key, read the request, call the FileService, render the
OpenAI shapes. Uploads are read with a cap (the tenant's largest file plus room for the
multipart framing); a bigger body is refused with a 413 as soon as it passes the cap, and file
parts past 1 MiB are spooled to a temporary file while parsing, which is checked and streamed
to the file storage from there: an upload is never held in memory whole.

    POST   /v1/files                   multipart: file, purpose=batch
    GET    /v1/files                   ?purpose= &after= &limit= (1-10000, default 20) &order=
    GET    /v1/files/{file_id}
    GET    /v1/files/{file_id}/content
    DELETE /v1/files/{file_id}
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import IO, cast

import orjson
from python_multipart.exceptions import FormParserError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tidegate.api.asgi import bearer_token
from tidegate.api.params import int_param
from tidegate.api.services import ServicesSlot
from tidegate.batch.files import FileLimits, FileService
from tidegate.errors import (
    ClientClosedError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
)
from tidegate.protocol.files import FileObject, FileOrder, file_deleted, file_list, file_object
from tidegate.store.models import StoredFile

__all__ = ["build_file_routes"]

MULTIPART_SLACK_BYTES = 64 * 1024
"""Room for the multipart boundaries, part headers and the purpose field."""
DEFAULT_PAGE = 20


class _UploadTooLarge(MultiPartException):
    """Raised inside the parser's stream, so the parser closes its temporary files."""


class FileRoutes:
    def __init__(self, *, services: ServicesSlot) -> None:
        self._slot = services

    async def upload(self, request: Request) -> Response:
        files, tenant_id, limits = await self._authorize(request, with_limits=True)
        assert limits is not None
        async with _read_upload(request, limits) as (purpose, filename, content):
            row = await files.create(tenant_id, filename, purpose, content, limits=limits)
        return _json(_file_json(row))

    async def list(self, request: Request) -> Response:
        files, tenant_id, _ = await self._authorize(request)
        params = request.query_params
        limit = int_param(request, "limit")
        limit = DEFAULT_PAGE if limit is None else limit
        order = params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise InvalidRequestError(
                f"Invalid value for 'order': '{order}'; use 'asc' or 'desc'.", param="order"
            )
        page = await files.list(
            tenant_id,
            purpose=params.get("purpose") or None,
            after=params.get("after") or None,
            limit=limit,
            order=cast(FileOrder, order),
        )
        return _json(file_list([_file_json(row) for row in page.files], has_more=page.has_more))

    async def retrieve(self, request: Request) -> Response:
        files, tenant_id, _ = await self._authorize(request)
        return _json(_file_json(await files.get(tenant_id, request.path_params["file_id"])))

    async def content(self, request: Request) -> Response:
        files, tenant_id, _ = await self._authorize(request)
        data = await files.content(tenant_id, request.path_params["file_id"])
        return Response(data, media_type="application/octet-stream")

    async def delete(self, request: Request) -> Response:
        files, tenant_id, _ = await self._authorize(request)
        row = await files.delete(tenant_id, request.path_params["file_id"])
        return _json(file_deleted(row.id))

    async def _authorize(
        self, request: Request, *, with_limits: bool = False
    ) -> tuple[FileService, str, FileLimits | None]:
        services = self._slot.get()
        principal = await services.keys.authenticate(bearer_token(request.scope))
        if services.files is None:
            raise NotFoundError(
                "The Files API is turned off in this gateway; the operator enables it with "
                "batch.enabled: true.",
                code="files_disabled",
            )
        limits = services.files.limits_for(principal.tenant) if with_limits else None
        return services.files, principal.tenant_id, limits


def build_file_routes(services: ServicesSlot) -> list[BaseRoute]:
    routes = FileRoutes(services=services)
    return [
        Route("/v1/files", routes.upload, methods=["POST"]),
        Route("/v1/files", routes.list, methods=["GET"]),
        Route("/v1/files/{file_id}", routes.retrieve, methods=["GET"]),
        Route("/v1/files/{file_id}", routes.delete, methods=["DELETE"]),
        Route("/v1/files/{file_id}/content", routes.content, methods=["GET"]),
    ]


@asynccontextmanager
async def _read_upload(
    request: Request, limits: FileLimits
) -> AsyncIterator[tuple[str, str, IO[bytes]]]:
    """(purpose, filename, content) of a multipart upload, read with a cap; the content is
    the parser's spooled temporary file, open until the block ends."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise InvalidRequestError(
            "Upload the file as multipart/form-data with the fields 'file' and 'purpose'.",
            code="invalid_content_type",
        )
    cap = limits.max_bytes + MULTIPART_SLACK_BYTES
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > cap:
        raise _too_large(limits)
    parser = MultiPartParser(
        request.headers, _capped(request.stream(), cap), max_files=1, max_fields=8
    )
    try:
        form = await parser.parse()
    except _UploadTooLarge:
        raise _too_large(limits) from None
    except MultiPartException as exc:
        raise _malformed(exc.message) from None
    except FormParserError as exc:  # python-multipart's own, which Starlette lets through
        raise _malformed(str(exc)) from None
    except ClientDisconnect:
        raise ClientClosedError("The client closed the connection during the upload.") from None
    try:
        upload = form.get("file")
        purpose = form.get("purpose")
        if not isinstance(upload, UploadFile):
            raise InvalidRequestError(
                "The upload has no 'file' part; send the file as the multipart field 'file'.",
                param="file",
            )
        if not isinstance(purpose, str) or not purpose:
            raise InvalidRequestError(
                "The upload has no 'purpose' field; send purpose=batch.", param="purpose"
            )
        yield purpose, upload.filename or "", upload.file
    finally:
        await form.close()


async def _capped(stream: AsyncIterator[bytes], cap: int) -> AsyncGenerator[bytes, None]:
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > cap:
            raise _UploadTooLarge("upload too large")
        yield chunk


def _malformed(reason: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"The multipart body could not be read: {reason.rstrip('.')}. Send multipart/form-data "
        "with the fields 'file' and 'purpose' (any HTTP client's file upload does).",
        param="file",
        code="invalid_multipart",
    )


def _too_large(limits: FileLimits) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"The upload is larger than {limits.max_bytes} bytes, the most a batch input file may "
        "hold. Split it into several files and batches, or ask the operator to raise the "
        "tenant's max_batch_file_bytes (or batch.max_file_bytes).",
        param="file",
        code="file_too_large",
    )


def _file_json(row: StoredFile) -> FileObject:
    return file_object(
        id=row.id,
        size=row.bytes,
        created_at=row.created_at,
        filename=row.filename,
        purpose=row.purpose,
    )


def _json(data: object) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")
