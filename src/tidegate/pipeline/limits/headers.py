"""OpenAI's x-ratelimit-* headers, built from the bucket levels a store reports.

When a tenant and its key both limit the same thing, the headers describe the bucket with less
left, because that is the one the client runs into first. Resets are the time until the bucket
is full again, in OpenAI's duration format ("1s", "6m0s", "20ms").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tidegate.pipeline.limits.layout import Layout

Headers = list[tuple[bytes, bytes]]


def format_duration(seconds: float) -> str:
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, math.ceil(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


class HeaderBuilder:
    """Builds the headers; caches the byte strings of limits, counts and resets it has made,
    because the same few values recur on every request. Which buckets have headers, and their
    names, come from the kinds table (``LimitKind.headers``), in table order."""

    def __init__(self, layout: Layout, *, cache_max: int = 8192) -> None:
        self._numbers: dict[int, bytes] = {}
        self._resets: dict[int, bytes] = {}
        self._cache_max = cache_max
        scope = len(layout.buckets) // 2
        # Per reported bucket kind: its names, refill window, and the tenant's and the key's
        # check index and level index.
        self._reported = tuple(
            (names, tenant.window_s * 1000, tenant.check, tenant.level, key.check, key.level)
            for tenant, key in zip(layout.buckets[:scope], layout.buckets[scope:], strict=True)
            if (names := layout.checks[tenant.check].kind.headers) is not None
        )

    def build(self, limits: Sequence[int], levels: Sequence[float]) -> Headers:
        """``limits``: ``Demand.limits`` (0: no limit); ``levels``: ``Verdict.levels``."""
        headers: Headers = []
        for names, window_ms, t_check, t_level, k_check, k_level in self._reported:
            tenant, key = limits[t_check], limits[k_check]
            if tenant or key:
                limit, level = _binding(tenant, levels[t_level], key, levels[k_level])
                self._append(headers, names, limit, level, window_ms)
        return headers

    def _append(
        self,
        headers: Headers,
        names: tuple[bytes, bytes, bytes],
        limit: int,
        level: float,
        window_ms: float,
    ) -> None:
        remaining = math.floor(level) if level > 0 else 0
        reset_ms = math.ceil((limit - level) * window_ms / limit)
        headers.append((names[0], self._number(limit)))
        headers.append((names[1], self._number(remaining)))
        headers.append((names[2], self._reset(reset_ms)))

    def _number(self, value: int) -> bytes:
        encoded = self._numbers.get(value)
        if encoded is None:
            if len(self._numbers) >= self._cache_max:
                self._numbers.clear()
            encoded = self._numbers[value] = str(value).encode()
        return encoded

    def _reset(self, ms: int) -> bytes:
        # Under a second the milliseconds show; above, whole seconds (a few hundred values).
        key = ms if ms < 1000 else 1000 * math.ceil(ms / 1000)
        encoded = self._resets.get(key)
        if encoded is None:
            if len(self._resets) >= self._cache_max:
                self._resets.clear()
            encoded = self._resets[key] = format_duration(key / 1000).encode()
        return encoded


def _binding(
    tenant_limit: int, tenant_level: float, key_limit: int, key_level: float
) -> tuple[int, float]:
    if not tenant_limit:
        return key_limit, key_level
    if not key_limit or tenant_level <= key_level:
        return tenant_limit, tenant_level
    return key_limit, key_level
