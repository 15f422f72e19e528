"""What a running ``pip install`` is doing, read from its output lines.

pip draws its progress bars only on a terminal, and the setup steps send its output to a log, so
the console would show nothing for minutes. These few line shapes are enough to say how far along
it is: packages resolved so far, the file being downloaded (with its size) and the final install.
"""

from __future__ import annotations

import re

_COLLECTING = re.compile(r"^Collecting (\S+)")
_DOWNLOADING = re.compile(r"^\s*Downloading (\S+?)(?:\s+\((.+)\))?\s*$")
_INSTALLING = re.compile(r"^Installing collected packages: (.*)$")


class PipProgress:
    """Fed pip's output line by line; ``summary`` is one short line for the console."""

    def __init__(self) -> None:
        self.collected = 0
        self.action = ""

    def feed(self, line: str) -> None:
        if match := _COLLECTING.match(line):
            self.collected += 1
            self.action = f"resolving {match.group(1)}"
        elif match := _DOWNLOADING.match(line):
            name = match.group(1).rsplit("/", 1)[-1]
            size = f" ({match.group(2)})" if match.group(2) else ""
            self.action = f"downloading {name}{size}"
        elif match := _INSTALLING.match(line):
            count = len([p for p in match.group(1).split(",") if p.strip()])
            self.action = f"installing {count} packages"
        elif line.startswith("Successfully installed"):
            self.action = "installed"
        elif line.startswith("Successfully uninstalled"):
            self.action = line.strip().lower()

    def summary(self) -> str:
        parts = []
        if self.collected:
            parts.append(f"{self.collected} packages resolved")
        if self.action:
            parts.append(self.action)
        return ", ".join(parts)
