"""Where file contents live: one small interface, a local directory or S3-compatible storage.

Keys are relative, slash-separated paths made of ``[A-Za-z0-9._-]`` segments (for example
``ten_x/file-abc``); anything else is refused, so a key can never escape the local root or the
S3 prefix. Writes are all-or-nothing: the local store writes a temporary file, fsyncs it and
renames it into place; an S3 PUT (or multipart upload) is atomic by itself. ``put_stream``
copies from an open file in chunks, so a large upload is never held in memory whole.

Failures of the backend (a full disk, an unreachable bucket) surface as
:class:`FileStorageError` (503, retry later); a key that holds nothing is
:class:`FileContentMissingError` (500: the store's index and the storage disagree).
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol, TypeVar

from pydantic import SecretStr

from tidegate.config import BatchConfig, Config
from tidegate.errors import TidegateError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "FileContentMissingError",
    "FileStorage",
    "FileStorageError",
    "LocalFileStorage",
    "S3FileStorage",
    "build_storage",
]

T = TypeVar("T")
S3_EXTRA_MISSING = "batch.storage is s3, which needs boto3: pip install 'tidegate[s3]'"
_SEGMENT = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")


class FileStorageError(TidegateError):
    """The file storage could not be read or written; retrying later may work."""

    status = 503
    error_type = "service_unavailable"
    outcome = "upstream"


class FileContentMissingError(TidegateError):
    """The store lists a file whose content the storage does not hold (a bug or lost data)."""


class FileStorage(Protocol):
    async def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing what was there, all or nothing."""
        ...

    async def put_stream(self, key: str, source: IO[bytes]) -> None:
        """Like ``put``, with the bytes read from ``source`` (from its start) in chunks."""
        ...

    async def get(self, key: str) -> bytes:
        """The bytes under ``key``; FileContentMissingError when there are none."""
        ...

    async def delete(self, key: str) -> None:
        """Remove ``key``; a key that holds nothing is not an error."""
        ...


def check_key(key: str) -> str:
    parts = key.split("/")
    if not all(_SEGMENT.match(part) for part in parts):
        raise ValueError(f"invalid file storage key {key!r}")
    return key


class LocalFileStorage:
    """Files in a directory on this machine (the default of ``tidegate up``)."""

    def __init__(self, root: Path) -> None:
        self._root = root

    @property
    def root(self) -> Path:
        return self._root

    def path(self, key: str) -> Path:
        return self._root.joinpath(*check_key(key).split("/"))

    async def put(self, key: str, data: bytes) -> None:
        target = self.path(key)
        await self._run("store", lambda: self._put_sync(target, lambda out: out.write(data)))

    async def put_stream(self, key: str, source: IO[bytes]) -> None:
        target = self.path(key)

        def copy(out: IO[bytes]) -> None:
            source.seek(0)
            shutil.copyfileobj(source, out, 1024 * 1024)

        await self._run("store", lambda: self._put_sync(target, copy))

    async def get(self, key: str) -> bytes:
        try:
            return await self._run("read", self.path(key).read_bytes)
        except FileNotFoundError as exc:
            raise _missing(key) from exc

    async def delete(self, key: str) -> None:
        target = self.path(key)
        await self._run("delete", lambda: target.unlink(missing_ok=True))

    @staticmethod
    def _put_sync(target: Path, write: Callable[[IO[bytes]], object]) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            with open(temporary, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a crash
        finally:
            os.close(directory)

    async def _run(self, action: str, func: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(func)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise FileStorageError(
                f"Could not {action} file content under {self._root} ({type(exc).__name__}: "
                f"{exc.strerror or exc}). Check the disk and batch.files_dir, then retry.",
                retry_after_s=1.0,
            ) from exc


class S3FileStorage:
    """Objects in an S3-compatible bucket (AWS, MinIO, Ceph ...), shared by every replica.

    boto3's client is synchronous and thread-safe: each call runs in a worker thread.
    """

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
    ) -> None:
        try:  # only an S3 store needs boto3: the `s3` extra
            import boto3
            from botocore.config import Config as BotoConfig
        except ModuleNotFoundError as exc:
            raise ValueError(S3_EXTRA_MISSING) from exc

        if not bucket:
            raise ValueError("batch.s3_bucket must name a bucket when batch.storage is s3")
        self._bucket = bucket
        self._prefix = prefix
        self._where = f"s3://{bucket}/{prefix}"
        self._client: S3Client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=BotoConfig(
                connect_timeout=connect_timeout_s,
                read_timeout=read_timeout_s,
                retries={"max_attempts": 3, "mode": "standard"},
                s3={"addressing_style": "path" if endpoint_url else "auto"},
            ),
        )

    def object_key(self, key: str) -> str:
        return self._prefix + check_key(key)

    async def put(self, key: str, data: bytes) -> None:
        name = self.object_key(key)
        await self._run(
            "store", lambda: self._client.put_object(Bucket=self._bucket, Key=name, Body=data)
        )

    async def put_stream(self, key: str, source: IO[bytes]) -> None:
        name = self.object_key(key)

        def upload() -> None:
            source.seek(0)
            # Multipart above boto3's threshold; the object appears only once it is complete.
            self._client.upload_fileobj(source, self._bucket, name)

        await self._run("store", upload)

    async def get(self, key: str) -> bytes:
        name = self.object_key(key)

        def read() -> bytes:
            body = self._client.get_object(Bucket=self._bucket, Key=name)["Body"]
            try:
                return body.read()
            finally:
                body.close()

        return await self._run("read", read, missing_key=key)

    async def delete(self, key: str) -> None:
        name = self.object_key(key)
        await self._run("delete", lambda: self._client.delete_object(Bucket=self._bucket, Key=name))

    async def _run(self, action: str, func: Callable[[], T], *, missing_key: str = "") -> T:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return await asyncio.to_thread(func)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if missing_key and code in ("NoSuchKey", "404"):
                raise _missing(missing_key) from exc
            raise self._failed(action, code or type(exc).__name__) from exc
        except (BotoCoreError, OSError) as exc:
            raise self._failed(action, type(exc).__name__) from exc

    def _failed(self, action: str, reason: str) -> FileStorageError:
        return FileStorageError(
            f"Could not {action} file content in {self._where} ({reason}). Check that the "
            "bucket exists and batch.s3_* (endpoint, region, credentials) are right, then retry.",
            retry_after_s=1.0,
        )


def build_storage(config: Config) -> FileStorage:
    """The storage ``config.batch`` names: a local directory (default) or an S3 bucket."""
    batch: BatchConfig = config.batch
    if batch.storage == "s3":
        return S3FileStorage(
            bucket=batch.s3_bucket,
            prefix=batch.s3_prefix,
            endpoint_url=batch.s3_endpoint_url or None,
            region=batch.s3_region,
            access_key_id=_secret(batch.s3_access_key_id),
            secret_access_key=_secret(batch.s3_secret_access_key),
        )
    return LocalFileStorage(config.files_dir)


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def _missing(key: str) -> FileContentMissingError:
    return FileContentMissingError(
        f"The content of stored file '{key}' is missing from the file storage. The store and "
        "the storage disagree; restore the storage or delete the file."
    )
