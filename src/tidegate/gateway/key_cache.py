"""The in-process cache of verified keys: key hash -> principal, for at most a TTL.

A hit is one dict lookup and a clock read, which keeps authentication on the request path at
about a microsecond. Entries of an expiring key end when the key expires; when full, expired
entries go first, then the oldest.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tidegate.gateway.keys import Principal


@dataclass(frozen=True, slots=True)
class _Cached:
    principal: Principal
    key_hash: str
    deadline: float  # time.monotonic() after which the key must be checked again


class PrincipalCache:
    def __init__(self, *, ttl_s: float, max_entries: int) -> None:
        self._ttl = ttl_s
        self._max_entries = max_entries
        self._entries: dict[str, _Cached] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key_hash: str) -> Principal | None:
        entry = self._entries.get(key_hash)
        if (
            entry is not None
            and entry.deadline > time.monotonic()
            and hmac.compare_digest(entry.key_hash, key_hash)
        ):
            return entry.principal
        return None

    def put(
        self, key_hash: str, principal: Principal, expires_at: datetime | None, now: datetime
    ) -> None:
        ttl = self._ttl
        if expires_at is not None:
            ttl = min(ttl, (expires_at - now).total_seconds())  # an expiring key leaves on time
        if ttl <= 0:
            return
        if len(self._entries) >= self._max_entries:
            self._evict()
        self._entries[key_hash] = _Cached(principal, key_hash, time.monotonic() + ttl)

    def forget(self, key_hash: str) -> None:
        self._entries.pop(key_hash, None)

    def forget_tenant(self, tenant_id: str) -> None:
        entries = self._entries
        for key_hash in [h for h, e in entries.items() if e.principal.tenant_id == tenant_id]:
            del entries[key_hash]

    def _evict(self) -> None:
        now = time.monotonic()
        for key_hash in [h for h, entry in self._entries.items() if entry.deadline <= now]:
            del self._entries[key_hash]
        # Still full: drop the oldest insertion; dicts keep insertion order.
        while len(self._entries) >= self._max_entries:
            del self._entries[next(iter(self._entries))]
