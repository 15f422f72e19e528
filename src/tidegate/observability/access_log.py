"""One structured JSON line per request, written off the request's critical path.

Lines are serialised with orjson and buffered; a background task flushes the buffer every
``flush_interval_s`` (or when it holds ``max_buffered`` lines), so a request never waits on a
write. The line holds ids, counts and timings only: no key, no prompt and no completion text.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import BinaryIO

import orjson

from tidegate.background import BackgroundTask
from tidegate.observability.records import RequestRecord


class AccessLog:
    def __init__(
        self,
        *,
        stream: BinaryIO | None = None,
        enabled: bool = True,
        flush_interval_s: float = 0.2,
        max_buffered: int = 256,
    ) -> None:
        self._stream = stream if stream is not None else sys.stdout.buffer
        self._enabled = enabled
        self._flush_interval_s = flush_interval_s
        self._max_buffered = max_buffered
        self._buffer: list[bytes] = []
        self._task = BackgroundTask("access-log-flush", self._flush_forever)

    def start(self) -> None:
        if self._enabled:
            self._task.start()

    async def stop(self) -> None:
        await self._task.stop()
        self.flush()

    def write(self, record: RequestRecord, duration_s: float) -> None:
        if not self._enabled:
            return
        line = {
            "ts": time.time(),
            "event": "access",
            "request_id": record.request_id,
            "client_request_id": record.client_request_id,
            "key_id": record.key_id,
            "tenant_id": record.tenant_id,
            "route": record.route,
            "model": record.model,
            "replica": record.replica,
            "stream": record.stream,
            "status": record.status,
            "outcome": record.outcome,
            "error_type": record.error_type,
            "safety": record.safety,
            "prompt_tokens": record.prompt_tokens,
            "completion_tokens": record.completion_tokens,
            "cached_tokens": record.cached_tokens,
            "cost_usd": record.cost_usd,
            "ttft_ms": None if record.ttft_s is None else round(record.ttft_s * 1000, 3),
            "duration_ms": round(duration_s * 1000, 3),
        }
        self._buffer.append(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))
        if len(self._buffer) >= self._max_buffered:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        data = b"".join(self._buffer)
        self._buffer.clear()
        try:
            self._stream.write(data)
            self._stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken log sink must never fail a request

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self._flush_interval_s)
            self.flush()
