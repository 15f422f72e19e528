"""The Batch API for the app's lifespan: the file and batch services the API serves, and the
runner that executes batch lines through the gateway's own services."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.batch.claims import Sessions
from tidegate.batch.crash import CrashHook
from tidegate.batch.execute import LineExecutor
from tidegate.batch.files import FileService
from tidegate.batch.ports import BatchFiles
from tidegate.batch.runner import BatchRunner
from tidegate.batch.service import BatchService
from tidegate.batch.storage import build_storage
from tidegate.batch.validate import LineChecker
from tidegate.config import BatchConfig, Config
from tidegate.pipeline.accounting import RequestAccounting
from tidegate.pipeline.completions import CompletionService
from tidegate.pipeline.validation import RequestValidator
from tidegate.routing.replicas import RoutingTable
from tidegate.tenancy.keys import KeyService


@dataclass(frozen=True, slots=True)
class Batches:
    files: FileService
    batches: BatchService


def wire_batches(config: Config, sessions: async_sessionmaker[AsyncSession]) -> Batches | None:
    """None: the Batch API is off (batch.enabled)."""
    if not config.batch.enabled:
        return None
    files = FileService(
        sessions=sessions,
        storage=build_storage(config),
        config=config.batch,
        max_line_bytes=config.server.max_body_bytes,
    )
    return Batches(
        files=files,
        batches=BatchService(
            sessions=sessions, files=files, max_window_s=config.batch.max_completion_window_s
        ),
    )


def start_runner(
    config: Config,
    stack: contextlib.AsyncExitStack,
    *,
    sessions: Sessions,
    files: BatchFiles,
    keys: KeyService,
    routing: RoutingTable,
    validator: RequestValidator,
    completions: CompletionService,
    accounting: RequestAccounting,
) -> None:
    """Started last, stopped first: no line is claimed once shutdown begins."""
    runner = build_runner(
        config.batch,
        sessions=sessions,
        files=files,
        keys=keys,
        routing=routing,
        validator=validator,
        completions=completions,
        accounting=accounting,
        max_line_bytes=config.server.max_body_bytes,
    )
    runner.start()
    stack.push_async_callback(runner.stop)


def build_runner(
    config: BatchConfig,
    *,
    sessions: Sessions,
    files: BatchFiles,
    keys: KeyService,
    routing: RoutingTable,
    validator: RequestValidator,
    completions: CompletionService,
    accounting: RequestAccounting,
    max_line_bytes: int,
) -> BatchRunner:
    """The runner, wired to the same completion pipeline and accounting as live requests.
    ``max_line_bytes``: the largest input line (server.max_body_bytes)."""
    crash = CrashHook(point=config.crash_point, after=config.crash_after)
    return BatchRunner(
        sessions=sessions,
        files=files,
        keys=keys,
        checker=LineChecker(routing=routing, validator=validator, max_line_bytes=max_line_bytes),
        executor=LineExecutor(completions=completions, accounting=accounting, crash=crash),
        config=config,
        crash=crash,
    )
