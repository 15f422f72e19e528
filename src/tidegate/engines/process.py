"""One engine OS process: its own process group, its own log file, group-wide signals.

vLLM forks an engine-core process (and more with tensor parallelism); signalling the group,
not just the API server's pid, is what makes sure nothing survives a stop or a kill.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tidegate.engines.log_noise import drop_exit_noise

# Killed processes vanish once the kernel has freed them (and init reaped them): milliseconds
# usually, longer for a process holding gigabytes of KV cache.
_GROUP_EXIT_WAIT_S = 10.0


class EngineProcess:
    def __init__(
        self, *, proc: asyncio.subprocess.Process, log_path: Path, log_start: int = 0
    ) -> None:
        self.proc = proc
        self.log_path = log_path
        self.log_start = log_start
        """Where this process's output begins in ``log_path``."""
        self.exited = asyncio.ensure_future(proc.wait())

    @classmethod
    async def spawn(
        cls, *, argv: Sequence[str], env: Mapping[str, str], log_path: Path
    ) -> EngineProcess:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"\n--- tidegate: starting at {stamp}: {' '.join(argv)}\n".encode())
            log.flush()
            start = log.tell()
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, **env},
                start_new_session=True,  # own session ⇒ own process group, pgid == pid
            )
        return cls(proc=proc, log_path=log_path, log_start=start)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def signal_group(self, sig: signal.Signals) -> None:
        # The group outlives its leader while children run; ESRCH means nobody is left.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    async def stop(self, *, timeout_s: float) -> None:
        """SIGTERM the group, SIGKILL it after ``timeout_s``; returns once the leader is reaped."""
        if not self.exited.done():
            self.signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self.exited), timeout_s)
            except TimeoutError:
                pass
        # Children may linger after the leader exits (or ignore SIGTERM): kill the group anyway,
        # and wait until it is empty so a caller may rely on nothing being left.
        self.signal_group(signal.SIGKILL)
        await self.exited
        if await self._group_gone(timeout_s=_GROUP_EXIT_WAIT_S):
            await asyncio.to_thread(drop_exit_noise, self.log_path, start=self.log_start)

    async def _group_gone(self, *, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                os.killpg(self.pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
            await asyncio.sleep(0.05)
        return False
