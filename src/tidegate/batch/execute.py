"""One batch line through the live request pipeline, at the ``batch`` class.

The line is admitted (validation, limits, budgets), scheduled behind interactive traffic, sent
upstream and accounted exactly as ``api/completions.py`` does for an HTTP request: the usage is
metered (written ahead, so a crash right after keeps it) before anything else happens, under a
request id unique to the attempt (``batch_req_<batch>_<line>_<attempt>``), so a line executed
twice after a crash is metered twice — once per answer the upstream actually served.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tidegate.batch.claims import ClaimedLine
from tidegate.errors import (
    LimiterUnavailableError,
    NoReadyReplicaError,
    OverloadedError,
    QueueTimeoutError,
    TidegateError,
)
from tidegate.observability.records import RequestRecord
from tidegate.pipeline.accounting import RequestAccounting, rejection_reason
from tidegate.pipeline.completions import CompletionService, PreparedRequest, RoutingHints
from tidegate.protocol.endpoints import Endpoint
from tidegate.tenancy.keys import Principal

log = logging.getLogger(__name__)

_BATCH_HINTS = RoutingHints(priority="batch")
_DEFAULT_RETRY_S = 1.0
# The refusals that mean "not now" rather than "never": the line is tried again later.
_TRANSIENT = (OverloadedError, NoReadyReplicaError, QueueTimeoutError, LimiterUnavailableError)


@dataclass(frozen=True, slots=True)
class LineResult:
    outcome: str
    """succeeded or failed."""
    result: dict[str, Any]
    """The output line without its custom_id: ``id``, ``response``, ``error``."""


class RetryLater(Exception):
    """The gateway refused the line for now (a limit, a budget, overload): release and retry."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(retry_after_s)
        self.retry_after_s = retry_after_s


def request_id(line: ClaimedLine) -> str:
    return f"batch_req_{line.batch_id}_{line.line_no}_{line.attempt}"


class LineExecutor:
    def __init__(
        self,
        *,
        completions: CompletionService,
        accounting: RequestAccounting,
        crash: Callable[[str], None],
    ) -> None:
        """``crash``: the test-only fault injection hook (see ``batch.crash``)."""
        self._completions = completions
        self._accounting = accounting
        self._crash = crash

    async def run(self, line: ClaimedLine, route: Endpoint, principal: Principal) -> LineResult:
        """The line's result, or RetryLater. Never raises anything else."""
        rid = request_id(line)
        record = RequestRecord(request_id=rid, route=route, kind="batch")
        record.key_id = principal.key_id
        record.tenant_id = principal.tenant_id
        record.tenant = principal.tenant_name
        retention_days = principal.tenant.prompt_retention_days
        prepared: PreparedRequest | None = None
        metered = False
        try:
            # The line is parsed JSON already: it becomes the typed request with no round trip
            # through bytes. A shallow copy: the gateway's edits replace top-level fields only,
            # and the claimed line stays as the client wrote it.
            request = self._completions.request_of(route, dict(line.body))
            prepared = await self._completions.admit(
                route, request, principal, record, None, _BATCH_HINTS
            )
            completion = await self._completions.complete(prepared, record)
            self._accounting.meter(record, payload=prepared.payload, retention_days=retention_days)
            metered = True
            self._crash("after_upstream")
            response = {"status_code": 200, "request_id": rid, "body": completion.json()}
            return LineResult("succeeded", {"id": rid, "response": response, "error": None})
        except _TRANSIENT as error:
            _note(record, error)
            raise RetryLater(error.retry_after_s or _DEFAULT_RETRY_S) from None
        except TidegateError as error:
            _note(record, error)
            return _failed(rid, error.code or error.error_type, error.message)
        except Exception:
            # A bug, not the line's fault; it still needs a result so the batch can finish.
            log.exception("batch line %s failed inside the gateway", rid)
            record.outcome, record.status, record.error_type = "upstream", 500, "internal_error"
            return _failed(rid, "internal_error", "The gateway failed to run this request.")
        finally:
            await self._accounting.finish(
                record,
                admission=prepared.admission if prepared is not None else None,
                payload=prepared.payload if prepared is not None else None,
                retention_days=retention_days,
                metered=metered,
            )


def _note(record: RequestRecord, error: TidegateError) -> None:
    record.outcome = error.outcome
    record.status = error.status
    record.error_type = error.error_type
    record.rejection = rejection_reason(error)


def _failed(rid: str, code: str, message: str) -> LineResult:
    return LineResult(
        "failed", {"id": rid, "response": None, "error": {"code": code, "message": message}}
    )
