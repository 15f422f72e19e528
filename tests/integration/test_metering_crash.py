"""kill -9 of a process that is recording usage at a high rate: after a fresh meter replays its
WAL, every event the process reported as recorded is in the store exactly once.

The child (this module run with ``python -m``) records events in order, prints how many it has
recorded after each group of ``record()`` calls, and lets its background flusher write to the
store as usual, so the kill lands with some events committed, some in committed-but-not-yet-
deleted segments, and some only in the WAL.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.usage_events import stored_count, stored_ids, usage_event
from tidegate.metering import UsageMeter
from tidegate.store import create_engine, create_sessionmaker

REPO = Path(__file__).resolve().parents[2]
GROUP = 50
KILL_AFTER = 6_000


def _id(index: int) -> str:
    return f"req_{index:08d}"


async def _child(store_url: str, wal_dir: Path) -> None:
    engine = create_engine(store_url)
    usage = UsageMeter(
        sessions=create_sessionmaker(engine), wal_dir=wal_dir, flush_interval_s=0.02, batch_size=500
    )
    await usage.start()
    recorded = 0
    while True:  # until killed
        for _ in range(GROUP):
            usage.record(usage_event(_id(recorded)))
            recorded += 1
        sys.stdout.write(f"{recorded}\n")
        sys.stdout.flush()
        await asyncio.sleep(0)  # let the flusher run, as a busy gateway's loop would


async def test_kill_9_loses_no_recorded_event(
    sessions: async_sessionmaker[AsyncSession], store_url: str, tmp_path: Path
) -> None:
    wal = tmp_path / "wal"
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.test_metering_crash", store_url, str(wal)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    reported = 0
    deadline = time.monotonic() + 60
    try:
        while reported < KILL_AFTER or await stored_count(sessions) == 0:
            line = await asyncio.to_thread(child.stdout.readline)
            assert line, f"the child exited early with {child.poll()}"
            reported = int(line)
            assert time.monotonic() < deadline, "the child recorded too slowly"
    finally:
        child.send_signal(signal.SIGKILL)
    rest = await asyncio.to_thread(child.stdout.read)  # lines still in the pipe
    child.wait()
    assert child.returncode == -signal.SIGKILL
    reported = max([reported, *(int(n) for n in rest.split())])
    before_replay = await stored_count(sessions)
    assert any(wal.glob("*.wal")), "nothing left to replay: the kill came too late to test it"

    fresh = UsageMeter(sessions=sessions, wal_dir=wal, flush_interval_s=60, batch_size=500)
    await fresh.start()
    await fresh.stop()

    ids = await stored_ids(sessions)
    assert len(ids) == len(set(ids))
    stored = set(ids)
    missing = [i for i in range(reported) if _id(i) not in stored]
    assert missing == [], f"{len(missing)} reported events lost ({before_replay} before replay)"
    # Beyond the last report the child may have recorded at most one more group, in order.
    assert stored == {_id(i) for i in range(len(stored))}
    assert reported <= len(stored) < reported + GROUP
    assert list(wal.iterdir()) == []


if __name__ == "__main__":
    asyncio.run(_child(sys.argv[1], Path(sys.argv[2])))
