"""Write-ahead segment files for usage events, one owner (a meter in one process) per file.

Layout in the WAL directory, for an owner ``<pid>-<random>``:

    usage-<pid>-<random>.lock            held with flock() for as long as the owner lives
    usage-<pid>-<random>-<seq>.wal       JSON lines, one usage event each, appended in order

Appends are plain ``write()`` calls on an unbuffered descriptor: once ``append`` returns, the
bytes are in the kernel's page cache and survive the process being killed (kill -9, OOM). They
reach the disk when the kernel writes them back or when ``sync_and_close`` fsyncs the segment.

The lock file tells a live owner's segments from a dead one's: the kernel drops an flock when
its process dies, however it dies. Another meter (at start, or its periodic sweep) may replay
and delete a dead owner's segments; a live owner's are never touched, so gateway processes can
share one WAL directory. pid plus random also keeps two owners from ever sharing a file name.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from tidegate.metering.events import UsageEvent

_PREFIX = "usage-"
_SEGMENT_SUFFIX = ".wal"
_LOCK_SUFFIX = ".lock"

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Segment:
    """A closed segment waiting to be committed. `events` is None once dropped from memory
    (or never loaded, for a dead owner's segment): it is then read back from the file."""

    path: Path
    events: list[UsageEvent] | None = None
    damaged_lines: int = 0
    fd: int = -1
    """The owner's descriptor, open until committed (or fsynced when the store is down)."""
    size: int = 0
    """Bytes this process wrote to it (for the WAL's bound)."""


class SegmentWriter:
    """The owner's side: the lock, the open segment, rotation."""

    def __init__(self, *, directory: Path) -> None:
        self.directory = directory
        self.owner = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._lock_fd = -1
        self._fd = -1
        self._seq = 0
        self._path: Path | None = None

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # The lock exists before any segment does, so no sweep can take a new owner for dead.
        self._lock_fd = os.open(self._lock_path(), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._open_next()

    @property
    def path(self) -> Path:
        assert self._path is not None, "SegmentWriter.open() first"
        return self._path

    def append(self, line: bytes) -> None:
        written = os.write(self._fd, line)
        while written < len(line):  # regular files rarely write short; never lose a tail
            written += os.write(self._fd, line[written:])

    def rotate(self) -> tuple[Path, int]:
        """Start a new segment; returns the previous one's path and still-open descriptor,
        for ``sync_and_close`` (off the event loop: fsync can take milliseconds)."""
        sealed = (self.path, self._fd)
        self._open_next()
        return sealed

    def close(self) -> tuple[Path, int]:
        """Stop appending; returns the last segment like ``rotate``."""
        sealed = (self.path, self._fd)
        self._fd, self._path = -1, None
        return sealed

    def release(self) -> None:
        """Give up ownership (after every segment is committed or left for a later replay)."""
        if self._lock_fd >= 0:
            self._lock_path().unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _open_next(self) -> None:
        path = self.directory / f"{_PREFIX}{self.owner}-{self._seq + 1:08d}{_SEGMENT_SUFFIX}"
        # Assigned only once open: a failure (disk full) leaves the current segment in use.
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._seq, self._path = self._seq + 1, path

    def _lock_path(self) -> Path:
        return self.directory / f"{_PREFIX}{self.owner}{_LOCK_SUFFIX}"


def sync_and_close(fd: int, directory: Path) -> None:
    """fsync a segment and its directory entry, then close it (blocking: run in a thread)."""
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    sync_directory(directory)


def sync_directory(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_segment(path: Path) -> Segment:
    """Load a segment's events. A last line without its newline is the torn tail of a write
    cut by a power failure and is skipped silently; any other bad line is counted."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    lines.pop()  # after the final newline: b"", or a torn tail
    segment = Segment(path=path, events=[])
    assert segment.events is not None
    for line in lines:
        try:
            segment.events.append(UsageEvent.from_json_line(line))
        except (ValueError, TypeError, KeyError):
            segment.damaged_lines += 1
    return segment


@dataclass(slots=True)
class DeadOwner:
    """Segments of an owner that is gone, locked by the caller until ``retire``."""

    owner: str
    segments: list[Path]
    lock_path: Path
    lock_fd: int

    def retire(self) -> None:
        self.lock_path.unlink(missing_ok=True)
        self.give_up()

    def give_up(self) -> None:
        """Leave the segments for a later sweep (the store failed)."""
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1


def dead_owners(directory: Path, *, except_owner: str) -> list[DeadOwner]:
    """Owners in `directory` with segments left and no live process holding their lock.

    Each returned owner's lock is now held by the caller (another sweeper skips it); call
    ``retire`` once its segments are committed and deleted, or close the lock to give up.
    """
    by_owner: dict[str, list[Path]] = {}
    if not directory.is_dir():
        return []
    for path in directory.glob(f"{_PREFIX}*{_SEGMENT_SUFFIX}"):
        owner = path.name[len(_PREFIX) : -len(_SEGMENT_SUFFIX)].rpartition("-")[0]
        if owner and owner != except_owner:
            by_owner.setdefault(owner, []).append(path)
    found: list[DeadOwner] = []
    for owner, segments in sorted(by_owner.items()):
        lock_path = directory / f"{_PREFIX}{owner}{_LOCK_SUFFIX}"
        try:
            lock_fd = os.open(lock_path, os.O_RDWR)
        except FileNotFoundError:
            lock_fd = -1  # a clean stop removed it, or another sweeper retired it: replay anyway
        if lock_fd >= 0:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(lock_fd)  # alive (or being replayed by another sweeper)
                continue
        found.append(DeadOwner(owner, sorted(segments), lock_path, lock_fd))
    return found


def retire_segment(segment: Segment) -> None:
    """Delete a committed segment; keep one with damaged lines as ``.corrupt`` for a person."""
    if segment.damaged_lines:
        corrupt = segment.path.with_suffix(".corrupt")
        logger.error(
            "usage WAL segment %s had %d unreadable lines; the rest is stored, the file is "
            "kept as %s",
            segment.path.name,
            segment.damaged_lines,
            corrupt.name,
        )
        segment.path.replace(corrupt)
        return
    segment.path.unlink(missing_ok=True)  # missing: another sweeper already retired it
