"""Usage metering and prompt-log retention.

- ``UsageMeter``: one ``UsageEvent`` per request, written ahead to a local file on the request
  path and to the store in batches by a background task; replayed after a crash, idempotent by
  request id (meter.py and wal.py say what a crash can lose).
- ``UsageQueries``: rollups per tenant and day or model, spend so far, raw records.
- ``PromptLogWriter`` and ``RetentionPurger``: redacted prompt text for tenants that opt in,
  deleted after the tenant's retention window.

Imports only the store and the error hierarchy, so the gateway, the admin API and the CLI can
all use it.
"""

from __future__ import annotations

from tidegate.metering.events import CHARGED_KINDS, UsageEvent, UsageKind
from tidegate.metering.meter import UsageMeter
from tidegate.metering.periods import parse_bound
from tidegate.metering.prompt_logs import PromptLogWriter
from tidegate.metering.queries import GroupBy, RecordPage, RollupRow, Spend, UsageQueries
from tidegate.metering.retention import RetentionPurger

__all__ = [
    "CHARGED_KINDS",
    "GroupBy",
    "PromptLogWriter",
    "RecordPage",
    "RetentionPurger",
    "RollupRow",
    "Spend",
    "UsageEvent",
    "UsageKind",
    "UsageMeter",
    "UsageQueries",
    "parse_bound",
]
