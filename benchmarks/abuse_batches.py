"""The batch half of ``make bench-abuse``: a batch created from a 50,000-line file (accepted, so
what matters is the time to answer and the event loop while the gateway validates and stores it),
and where a file with one line larger than ``server.max_body_bytes`` is refused.

Each 50,000-line batch is cancelled as soon as its lines are stored, so the runner does not spend
the rest of the benchmark executing them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from benchmarks.abuse_inputs import MULTIPART_TYPE, Body, multipart
from benchmarks.raw_http import Reply, send


@dataclass(frozen=True)
class Gateway:
    port: int
    key: str

    @property
    def auth(self) -> tuple[str, str]:
        return ("Authorization", f"Bearer {self.key}")

    async def json(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        data = b"" if body is None else orjson.dumps(body)
        headers = [self.auth, ("Content-Type", "application/json")]
        reply = await send(
            self.port, method, path, headers=headers, chunks=[data], length=len(data)
        )
        try:
            return reply.status, orjson.loads(reply.body) if reply.body else None
        except orjson.JSONDecodeError:
            return reply.status, reply.body.decode(errors="replace")[:300]

    async def upload(self, content: bytes, *, timeout_s: float = 120.0) -> Reply:
        body = multipart(Body(prefix=content))
        headers = [self.auth, ("Content-Type", MULTIPART_TYPE)]
        return await send(
            self.port,
            "POST",
            "/v1/files",
            headers=headers,
            chunks=body.chunks(),
            length=body.length,
            timeout_s=timeout_s,
        )

    async def forget(self, reply: Reply) -> None:
        """Delete the file an accepted upload created (the benchmark repeats uploads)."""
        if reply.status == 200:
            await self.json("DELETE", f"/v1/files/{orjson.loads(reply.body)['id']}")


@dataclass
class BatchRun:
    create_ms: float
    create_status: int
    started: float
    """``time.monotonic()`` at the create; with the two below, the phases /healthz is split by."""
    validated_at: float | None = None
    ended_at: float | None = None
    validation_s: float | None = None
    """From the create to the batch leaving ``validating``."""
    status_after_validation: str = ""
    errors: list[Any] = field(default_factory=list)


async def wait_status(
    gateway: Gateway, batch_id: str, *, leave: tuple[str, ...], timeout_s: float
) -> dict[str, Any]:
    """Poll the batch until its status is not one of ``leave``; returns the batch object."""
    deadline = time.monotonic() + timeout_s
    while True:
        status, batch = await gateway.json("GET", f"/v1/batches/{batch_id}")
        if status == 200 and batch["status"] not in leave:
            return dict(batch)
        if time.monotonic() > deadline:
            raise TimeoutError(f"batch {batch_id} still {batch!r} after {timeout_s:.0f} s")
        await asyncio.sleep(0.05)


async def run_batch(
    gateway: Gateway, file_id: str, *, cancel: bool, timeout_s: float = 120.0
) -> BatchRun:
    """Create a batch from ``file_id``, wait until it is validated, optionally cancel it and wait
    until it ends (so its work stays inside the measured window)."""
    body = orjson.dumps(
        {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    )
    headers = [gateway.auth, ("Content-Type", "application/json")]
    started = time.monotonic()
    reply = await send(
        gateway.port, "POST", "/v1/batches", headers=headers, chunks=[body], length=len(body)
    )
    run = BatchRun(create_ms=reply.elapsed_ms, create_status=reply.status, started=started)
    if reply.status != 200:
        return run
    batch_id = orjson.loads(reply.body)["id"]
    batch = await wait_status(gateway, batch_id, leave=("validating",), timeout_s=timeout_s)
    run.validated_at = time.monotonic()
    run.validation_s = run.validated_at - started
    run.status_after_validation = batch["status"]
    run.errors = list((batch.get("errors") or {}).get("data") or [])[:3]
    if cancel and batch["status"] == "in_progress":
        await gateway.json("POST", f"/v1/batches/{batch_id}/cancel")
    if cancel:
        await wait_status(
            gateway,
            batch_id,
            leave=("in_progress", "cancelling", "finalizing"),
            timeout_s=timeout_s,
        )
        run.ended_at = time.monotonic()
    return run


def batch_run_json(run: BatchRun) -> dict[str, Any]:
    return {
        "create_ms": round(run.create_ms, 3),
        "create_status": run.create_status,
        "validation_s": None if run.validation_s is None else round(run.validation_s, 3),
        "status_after_validation": run.status_after_validation,
        "errors": run.errors,
    }
