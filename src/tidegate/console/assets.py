"""The console's files, read once from the package and served from memory.

Only the files listed here are served (no path from a request ever reaches the file system),
each with its own content type, so nothing the page loads can be sniffed as something else.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str


def load_assets() -> dict[str, Asset]:
    """Every file under static/, by name (index.html, app.js ...)."""
    found: dict[str, Asset] = {}
    for entry in files("tidegate.console").joinpath("static").iterdir():
        suffix = entry.name[entry.name.rfind(".") :]
        if entry.is_file() and suffix in _TYPES:
            found[entry.name] = Asset(entry.read_bytes(), _TYPES[suffix])
    return found
