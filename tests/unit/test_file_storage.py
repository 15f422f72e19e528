"""File storage: one contract, held by the local directory and by S3 (a real moto server)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.gateway import free_port
from tests.support.s3 import ACCESS_KEY_ID, SECRET_ACCESS_KEY, S3Server, moto_server
from tidegate.batch.storage import (
    FileContentMissingError,
    FileStorage,
    FileStorageError,
    LocalFileStorage,
    S3FileStorage,
    build_storage,
)
from tidegate.config import Config


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


def s3_storage(server: S3Server, bucket: str, prefix: str = "tidegate/files/") -> S3FileStorage:
    return S3FileStorage(
        bucket=bucket,
        prefix=prefix,
        endpoint_url=server.endpoint_url,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
    )


@pytest.fixture(params=["local", "s3"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[FileStorage]:
    if request.param == "local":
        yield LocalFileStorage(tmp_path / "files")
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        yield s3_storage(server, server.new_bucket())


async def test_put_get_delete_round_trip(storage: FileStorage) -> None:
    data = b'{"custom_id": "a"}\n' + bytes(range(256)) * 1000
    await storage.put("ten_a/file-1", data)
    assert await storage.get("ten_a/file-1") == data
    await storage.delete("ten_a/file-1")
    with pytest.raises(FileContentMissingError):
        await storage.get("ten_a/file-1")


async def test_put_replaces_and_keys_are_separate(storage: FileStorage) -> None:
    await storage.put("ten_a/file-1", b"first")
    await storage.put("ten_a/file-1", b"second")
    await storage.put("ten_b/file-1", b"other tenant")
    assert await storage.get("ten_a/file-1") == b"second"
    assert await storage.get("ten_b/file-1") == b"other tenant"


async def test_empty_content_and_missing_delete(storage: FileStorage) -> None:
    await storage.put("ten_a/empty", b"")
    assert await storage.get("ten_a/empty") == b""
    await storage.delete("ten_a/never-written")  # no error


@pytest.mark.parametrize("key", ["../escape", "a/../../b", "/abs", "a//b", "", "a/.hidden", "a b"])
async def test_keys_that_could_escape_are_refused(storage: FileStorage, key: str) -> None:
    with pytest.raises(ValueError):
        await storage.put(key, b"x")


async def test_local_write_is_atomic_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    storage = LocalFileStorage(tmp_path / "files")
    await storage.put("ten_a/file-1", b"old")
    await storage.put("ten_a/file-1", b"new")
    assert sorted(os.listdir(tmp_path / "files" / "ten_a")) == ["file-1"]
    assert (tmp_path / "files" / "ten_a" / "file-1").read_bytes() == b"new"


async def test_local_failure_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_bytes(b"")
    storage = LocalFileStorage(blocker)
    with pytest.raises(FileStorageError) as info:
        await storage.put("ten_a/file-1", b"x")
    assert info.value.status == 503
    assert "batch.files_dir" in info.value.message
    assert list(tmp_path.iterdir()) == [blocker]


async def test_s3_objects_live_under_the_prefix(s3_server: S3Server) -> None:
    bucket = s3_server.new_bucket()
    await s3_storage(s3_server, bucket, prefix="pre/fix/").put("ten_a/file-1", b"x")
    listed = s3_server.client().list_objects_v2(Bucket=bucket)  # type: ignore[attr-defined]
    assert [o["Key"] for o in listed["Contents"]] == ["pre/fix/ten_a/file-1"]


async def test_s3_missing_bucket_is_a_storage_error(s3_server: S3Server) -> None:
    storage = s3_storage(s3_server, "no-such-bucket")
    with pytest.raises(FileStorageError) as info:
        await storage.put("ten_a/file-1", b"x")
    assert "NoSuchBucket" in info.value.message
    assert SECRET_ACCESS_KEY not in info.value.message


async def test_s3_unreachable_endpoint_is_a_storage_error() -> None:
    storage = S3FileStorage(
        bucket="b",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
        connect_timeout_s=1.0,
    )
    with pytest.raises(FileStorageError) as info:
        await storage.get("ten_a/file-1")
    assert info.value.retry_after_s is not None


def test_build_storage_follows_the_config(tmp_path: Path, s3_server: S3Server) -> None:
    local = build_storage(Config(home=tmp_path))
    assert isinstance(local, LocalFileStorage)
    assert local.root == tmp_path / "files"
    custom = build_storage(Config(home=tmp_path, batch={"files_dir": str(tmp_path / "elsewhere")}))
    assert isinstance(custom, LocalFileStorage) and custom.root == tmp_path / "elsewhere"
    s3 = build_storage(
        Config(
            home=tmp_path,
            batch={
                "storage": "s3",
                "s3_bucket": "bkt",
                "s3_prefix": "p/",
                "s3_endpoint_url": s3_server.endpoint_url,
                "s3_access_key_id": ACCESS_KEY_ID,
                "s3_secret_access_key": SECRET_ACCESS_KEY,
            },
        )
    )
    assert isinstance(s3, S3FileStorage) and s3.object_key("t/f") == "p/t/f"


def test_s3_needs_a_bucket(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="s3_bucket"):
        build_storage(Config(home=tmp_path, batch={"storage": "s3"}))
