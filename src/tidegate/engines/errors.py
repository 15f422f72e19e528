"""Errors of local engine setup and supervision.

These never reach an API client (``tidegate.errors`` is that hierarchy); the CLI prints them
and exits non-zero.

    EngineError
    └── EngineSetupError    install or model preparation failed (carries the log path)
"""

from __future__ import annotations

from pathlib import Path


class EngineError(Exception):
    """Base of local engine errors."""


class EngineSetupError(EngineError):
    def __init__(self, message: str, *, log_path: Path | None = None) -> None:
        super().__init__(message)
        self.log_path = log_path
