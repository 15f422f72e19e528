"""Drop the ``nanobind: leaked ...`` lines vLLM's extensions print when its processes exit.

nanobind reports every object still alive at interpreter exit; vLLM's compiled extensions leave
hundreds, all harmless (the process is exiting, the OS frees them). In a replica log they bury the
lines that explain why a replica stopped, so they are removed once the process group is gone and
replaced by one line saying how many were dropped.
"""

from __future__ import annotations

import re
from pathlib import Path

# nanobind's report: "nanobind: leaked 12 instances!", one " - leaked instance|type|function ..."
# line per object (" - ... skipped remainder" past a cap), "nanobind: this is likely caused by
# ..." and a link to its refleaks page.
_NOISE = re.compile(
    rb"^(nanobind: |\s*- leaked (instance|type|function) |\s*- \.\.\. skipped remainder"
    rb"|See https://nanobind\.readthedocs\.io/)"
)


def drop_exit_noise(path: Path, *, start: int) -> int:
    """Remove nanobind lines written to ``path`` after byte ``start``; returns how many.

    Rewrites in place (nothing writes to the log once the engine's process group is gone).
    """
    try:
        with path.open("r+b") as log:
            log.seek(start)
            lines = log.read().splitlines(keepends=True)
            kept = [line for line in lines if not _NOISE.match(line)]
            dropped = len(lines) - len(kept)
            if dropped == 0:
                return 0
            note = (
                f"--- tidegate: dropped {dropped} lines of nanobind's leak report vLLM printed at "
                "exit (objects alive at interpreter exit; harmless)\n"
            ).encode()
            if kept and not kept[-1].endswith(b"\n"):
                kept[-1] += b"\n"
            log.seek(start)
            log.truncate()
            log.writelines([*kept, note])
            return dropped
    except FileNotFoundError:
        return 0
