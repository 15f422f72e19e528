"""The in-process caches of keys: verified ones (key hash -> principal, for at most a TTL) and
refused ones (key hash -> why, for ``REFUSED_TTL_S``).

A hit is one dict lookup and a clock read, which keeps authentication on the request path at
about a microsecond. Entries of an expiring key end when the key expires; when full, expired
entries go first, then the oldest.

The refused-key cache keeps a client that repeats an unknown, revoked or expired key (a
misconfigured client retrying, or a flood) from costing a store query per request. It holds
only hashes, is bounded, and forgets an entry after ``REFUSED_TTL_S`` (2 s): a key stored by
another process after it was refused here is accepted within that time; one created through this
process is forgotten at once.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from tidegate.errors import AuthenticationError

if TYPE_CHECKING:
    from tidegate.tenancy.principal import Principal

REFUSED_TTL_S = 2.0
"""How long a refused key is answered from memory before the store is asked again."""
REFUSED_MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class _Cached:
    principal: Principal
    key_hash: str
    deadline: float  # time.monotonic() after which the key must be checked again
    outage_deadline: float  # after which it is refused even while the store is unreachable


class PrincipalCache:
    def __init__(self, *, ttl_s: float, max_entries: int, outage_s: float = 0.0) -> None:
        """``outage_s``: how long past its TTL an entry still serves while the store is down
        (``stale``)."""
        self._ttl = ttl_s
        self._outage = outage_s
        self._max_entries = max_entries
        self._entries: dict[str, _Cached] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key_hash: str) -> Principal | None:
        entry = self._entry(key_hash)
        return entry.principal if entry and entry.deadline > time.monotonic() else None

    def stale(self, key_hash: str) -> Principal | None:
        """The principal verified within the outage grace, for when the store cannot be asked
        (never past the key's own expiry)."""
        entry = self._entry(key_hash)
        return entry.principal if entry and entry.outage_deadline > time.monotonic() else None

    def _entry(self, key_hash: str) -> _Cached | None:
        entry = self._entries.get(key_hash)
        if entry is not None and hmac.compare_digest(entry.key_hash, key_hash):
            return entry
        return None

    def put(
        self, key_hash: str, principal: Principal, expires_at: datetime | None, now: datetime
    ) -> None:
        ttl, outage = self._ttl, self._ttl + self._outage
        if expires_at is not None:
            left = (expires_at - now).total_seconds()
            ttl, outage = min(ttl, left), min(outage, left)  # an expiring key leaves on time
        if ttl <= 0:
            return
        if len(self._entries) >= self._max_entries:
            self._evict()
        clock = time.monotonic()
        self._entries[key_hash] = _Cached(principal, key_hash, clock + ttl, clock + outage)

    def forget(self, key_hash: str) -> None:
        self._entries.pop(key_hash, None)

    def forget_tenant(self, tenant_id: str) -> None:
        entries = self._entries
        for key_hash in [h for h, e in entries.items() if e.principal.tenant_id == tenant_id]:
            del entries[key_hash]

    def _evict(self) -> None:
        now = time.monotonic()
        for key_hash in [h for h, e in self._entries.items() if e.outage_deadline <= now]:
            del self._entries[key_hash]
        # Still full: drop the oldest insertion; dicts keep insertion order.
        while len(self._entries) >= self._max_entries:
            del self._entries[next(iter(self._entries))]


@dataclass(frozen=True, slots=True)
class _Refused:
    message: str
    code: str | None
    deadline: float  # time.monotonic() after which the store is asked again


class RefusedKeys:
    """Recently refused key hashes and the error each got (its message names no secret)."""

    def __init__(
        self, *, ttl_s: float = REFUSED_TTL_S, max_entries: int = REFUSED_MAX_ENTRIES
    ) -> None:
        self._ttl = ttl_s
        self._max_entries = max_entries
        self._entries: dict[str, _Refused] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def check(self, key_hash: str) -> None:
        """Raise the error the key got, if it was refused within the TTL."""
        entry = self._entries.get(key_hash)
        if entry is None:
            return
        if entry.deadline <= time.monotonic():
            self._entries.pop(key_hash, None)
            return
        # A new error each time: a raised exception carries its traceback along.
        raise AuthenticationError(entry.message, code=entry.code)

    def put(self, key_hash: str, error: AuthenticationError) -> None:
        if self._ttl <= 0:
            return
        entries = self._entries
        if len(entries) >= self._max_entries:
            now = time.monotonic()
            for stale in [h for h, entry in entries.items() if entry.deadline <= now]:
                del entries[stale]
            # Still full (a flood of distinct keys): drop the oldest insertions.
            while len(entries) >= self._max_entries:
                del entries[next(iter(entries))]
        entries.pop(key_hash, None)  # re-inserted last, so the order stays oldest first
        entries[key_hash] = _Refused(error.message, error.code, time.monotonic() + self._ttl)

    def forget(self, key_hash: str) -> None:
        self._entries.pop(key_hash, None)
