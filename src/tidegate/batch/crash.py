"""Test-only fault injection for the batch runner (``batch.crash_point``).

The crash-recovery tests need a process to die at exact points of a line's life (after its
claim, after the upstream answered, before its result is committed, while the output file is
written); an outside ``kill -9`` cannot hit those reliably. ``os._exit`` skips every cleanup,
exactly like kill -9. With no crash point configured, the hook does nothing.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

CRASH_EXIT_CODE = 137
"""What a shell reports for a process killed by SIGKILL."""


class CrashHook:
    def __init__(self, *, point: str, after: int = 1) -> None:
        self._point = point
        self._left = after

    def __call__(self, point: str) -> None:
        if not self._point or point != self._point:
            return
        self._left -= 1
        if self._left <= 0:
            log.warning("batch.crash_point %s reached: exiting now (test fault injection)", point)
            os._exit(CRASH_EXIT_CODE)
