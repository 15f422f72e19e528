"""One gateway's view of its share of one pool: the arithmetic, no I/O.

The local admission limit (``limit``) is what the pool's queue treats as its capacity. The
protocol with Redis (``cluster_lua.SYNC``) keeps two facts true:

- what this gateway has in flight never exceeds the grant Redis records for it: before each
  sync it reports ``floor() = max(in_flight, limit)``, everything it might hold while the call is
  out, and Redis never records less;
- after a sync the limit is ``min(grant, target)``: a gateway whose share shrank stops admitting
  at once, and its grant follows its in-flight down on the next heartbeats, which is when the
  others (a joining member among them) may take those slots.

Without Redis (a failed sync, or the lease ran out) the gateway keeps at most a conservative
share: the capacity divided by the last member count it saw (``fallback_members`` before it saw
any), and no more than it held while its lease may still be valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Mode = Literal["cluster", "fallback"]
MODES: tuple[Mode, ...] = ("cluster", "fallback")


@dataclass(slots=True)
class PoolShare:
    fallback_members: int
    limit: int = 0
    """Slots this gateway admits; 0 until the first sync says otherwise."""
    grant: int = 0
    target: int = 0
    members: int = 0
    """Members seen at the last sync (0: none yet)."""
    lease_until: float = 0.0
    """Local monotonic time until which the last recorded grant is certainly still held."""
    mode: Mode = "cluster"

    def floor(self, in_flight: int) -> int:
        """What to report before a sync: everything that may be in flight until it answers."""
        return max(in_flight, self.limit)

    def synced(self, *, grant: int, target: int, members: int, lease_until: float) -> None:
        self.grant, self.target, self.members = grant, target, members
        self.limit = min(grant, target)
        self.lease_until = lease_until
        self.mode = "cluster"

    def failed(self, *, capacity: int, now: float) -> None:
        """Redis did not answer: fall back to the conservative share."""
        members = self.members or self.fallback_members
        share = max(1, capacity // members) if capacity else 0
        if now < self.lease_until:
            # Our grant may still be counted by the others: never go above it meanwhile.
            share = min(share, self.limit)
        self.limit = share
        self.mode = "fallback"
