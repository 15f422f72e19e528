"""Building the batch runner from the gateway's own services (called by the app's lifespan)."""

from __future__ import annotations

from tidegate.batch.claims import Sessions
from tidegate.batch.crash import CrashHook
from tidegate.batch.execute import LineExecutor
from tidegate.batch.ports import BatchFiles
from tidegate.batch.runner import BatchRunner
from tidegate.batch.validate import LineChecker
from tidegate.config import BatchConfig
from tidegate.pipeline.accounting import RequestAccounting
from tidegate.pipeline.completions import CompletionService
from tidegate.pipeline.validation import RequestValidator
from tidegate.routing.replicas import RoutingTable
from tidegate.tenancy.keys import KeyService


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
