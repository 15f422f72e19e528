"""Run setup commands with one visible progress line each and their output in a log file.

pip prints hundreds of lines (and on some hosts hundreds of index warnings); the console only
shows the step, its duration, and on failure the log's tail.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from rich.console import Console

from tidegate.engines.errors import EngineSetupError

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
    """Runs commands in sequence, appending their output to ``log_path``."""

    def __init__(self, *, console: Console, log_path: Path) -> None:
        self.console = console
        self.log_path = log_path
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
        started = time.monotonic()
        with self.log_path.open("a") as log:
            log.write(f"\n$ {' '.join(argv)}\n")
            log.flush()
            with self.console.status(f"{title} …"):
                try:
                    done = subprocess.run(
                        list(argv),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=dict(env) if env is not None else None,
                        check=False,
                    )
                except OSError as exc:
                    raise EngineSetupError(
                        f"{title} failed: {exc}", log_path=self.log_path
                    ) from exc
        elapsed = time.monotonic() - started
        if done.returncode != 0:
            tail = log_tail(self.log_path)
            if tail:
                self.console.print(tail, markup=False, highlight=False)
            raise EngineSetupError(
                f"{title} failed (exit {done.returncode}); full output in {self.log_path}",
                log_path=self.log_path,
            )
        self.note(f"{title} [dim]({elapsed:.1f}s)[/dim]")
