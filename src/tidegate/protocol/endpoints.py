"""The completion endpoints and their paths: the one table the routes, the upstream calls, the
batch API, the request-id middleware and the metrics' ``route`` label read.

An ``Endpoint`` is the kind of completion call (a chat or a plain completion); a ``Route``
(``routing.rules``) is a model's chain of pools, and a Starlette ``Route`` mounts a path.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "ENDPOINTS",
    "ENDPOINT_OF_PATH",
    "PUBLIC_PATHS",
    "UPSTREAM_PATHS",
    "Endpoint",
]

Endpoint = Literal["chat", "completions"]
ENDPOINTS: tuple[Endpoint, ...] = ("chat", "completions")
"""Also the values of the metrics' ``route`` label."""

PUBLIC_PATHS: dict[Endpoint, str] = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
}
"""Where the gateway serves each endpoint (and what a batch's ``endpoint`` names)."""

ENDPOINT_OF_PATH: dict[str, Endpoint] = {path: kind for kind, path in PUBLIC_PATHS.items()}

UPSTREAM_PATHS: dict[Endpoint, str] = {"chat": "/chat/completions", "completions": "/completions"}
"""Each endpoint's path under a replica's base URL (which ends in /v1)."""
