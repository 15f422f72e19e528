"""The WAL's pieces without a store: the line format, torn and damaged segments, ownership
across real processes, and how query bounds are read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.usage_events import T0, usage_event
from tidegate.errors import InvalidRequestError
from tidegate.metering import UsageEvent, parse_bound
from tidegate.metering.wal import SegmentWriter, dead_owners, read_segment, retire_segment


def test_event_line_round_trip() -> None:
    event = usage_event("req_1", key_id=None, replica=None, ttft_ms=None, kind="shadow")
    line = event.to_json_line()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    back = UsageEvent.from_json_line(line)
    assert back == event
    assert back.created_at.tzinfo is not None


def test_event_line_ignores_unknown_fields_and_rejects_naive_times() -> None:
    line = (
        usage_event("req_1")
        .to_json_line()
        .replace(b'{"request_id"', b'{"new_field":1,"request_id"')
    )
    assert UsageEvent.from_json_line(line).request_id == "req_1"
    naive = usage_event("req_2").to_json_line().replace(b"+00:00", b"")
    with pytest.raises(ValueError):
        UsageEvent.from_json_line(naive)


def test_torn_tail_is_skipped_and_damaged_lines_keep_the_file(tmp_path: Path) -> None:
    good = [usage_event(f"req_{i}") for i in range(3)]
    path = tmp_path / "usage-1-aa-00000001.wal"
    torn = usage_event("req_torn").to_json_line()[:40]  # a write cut by a power failure
    path.write_bytes(b"".join(e.to_json_line() for e in good) + torn)
    segment = read_segment(path)
    assert segment.events == good and segment.damaged_lines == 0
    retire_segment(segment)
    assert not path.exists()

    damaged = tmp_path / "usage-1-aa-00000002.wal"
    damaged.write_bytes(good[0].to_json_line() + b"not json\n" + good[1].to_json_line())
    segment = read_segment(damaged)
    assert segment.events == good[:2] and segment.damaged_lines == 1
    retire_segment(segment)
    assert not damaged.exists() and damaged.with_suffix(".corrupt").exists()


def test_writer_rotates_segments_and_appends_whole_lines(tmp_path: Path) -> None:
    writer = SegmentWriter(directory=tmp_path / "wal")
    writer.open()
    writer.append(usage_event("req_1").to_json_line())
    first, fd = writer.rotate()
    os.close(fd)
    writer.append(usage_event("req_2").to_json_line())
    second, fd = writer.close()
    os.close(fd)
    assert first != second and str(os.getpid()) in first.name
    assert [e.request_id for e in read_segment(first).events or []] == ["req_1"]
    assert [e.request_id for e in read_segment(second).events or []] == ["req_2"]
    assert dead_owners(tmp_path / "wal", except_owner=writer.owner) == []
    writer.release()
    assert sorted(p.suffix for p in (tmp_path / "wal").iterdir()) == [".wal", ".wal"]


_CHILD = """
import sys, time
from pathlib import Path
from tidegate.metering.wal import SegmentWriter
writer = SegmentWriter(directory=Path(sys.argv[1]))
writer.open()
writer.append(b'{}\\n')
print(writer.owner, flush=True)
time.sleep(60)
"""


def test_a_live_process_keeps_its_segments_and_a_killed_one_leaves_them(tmp_path: Path) -> None:
    wal = tmp_path / "wal"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(wal)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        owner = child.stdout.readline().strip()
        assert owner.startswith(f"{child.pid}-")
        assert dead_owners(wal, except_owner="me") == []  # its flock says it is alive
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    (found,) = dead_owners(wal, except_owner="me")
    assert found.owner == owner and len(found.segments) == 1
    # While this sweeper holds the dead owner's lock, a second sweeper leaves it alone.
    assert dead_owners(wal, except_owner="me") == []
    found.retire()
    assert not found.lock_path.exists()


def test_parse_bound() -> None:
    day = datetime(2026, 11, 3, tzinfo=UTC)
    assert parse_bound("2026-11-03", param="since", end=False) == day
    assert parse_bound("2026-11-03", param="until", end=True) == day + timedelta(days=1)
    assert parse_bound("2026-11-03T12:00:00Z", param="since", end=False) == T0
    assert parse_bound("2026-11-03T12:00:00", param="until", end=True) == T0
    assert parse_bound("2026-11-03T13:00:00+01:00", param="since", end=False) == T0
    assert parse_bound(None, param="since", end=False) is None
    with pytest.raises(InvalidRequestError) as caught:
        parse_bound("yesterday", param="since", end=False)
    assert caught.value.param == "since"
