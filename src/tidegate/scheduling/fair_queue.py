"""One class's queue: per-tenant FIFOs served by deficit round robin on estimated tokens.

Each tenant with waiting requests is in a ring and has a deficit counter. The tenant at the head of
the ring is served while its deficit covers its oldest request's cost (prompt + max_tokens);
otherwise it is credited ``quantum × weight`` and moves to the back. Over a window, tenants that
keep work queued get tokens in proportion to their weights, whatever their request sizes. A
tenant that empties its queue leaves the ring and forfeits its deficit (no banking).

Items are kept in arrival order too, so the oldest one (for ageing) is found in O(1), and any item
can be removed at once (a client that went away, a timeout).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class Queued(Protocol):
    @property
    def tenant(self) -> str: ...
    @property
    def cost(self) -> int: ...


T = TypeVar("T", bound=Queued)


class FairQueue(Generic[T]):
    def __init__(self, *, quantum: int, weight: Callable[[str], float]) -> None:
        self._quantum = quantum
        self._weight = weight
        self._tenants: dict[str, deque[T]] = {}
        self._ring: deque[str] = deque()
        self._deficit: dict[str, float] = {}
        self._order: dict[T, None] = {}

    def __len__(self) -> int:
        return len(self._order)

    def __bool__(self) -> bool:
        return bool(self._order)

    def push(self, item: T) -> None:
        queue = self._tenants.get(item.tenant)
        if queue is None:
            queue = self._tenants[item.tenant] = deque()
            self._ring.append(item.tenant)
            self._deficit[item.tenant] = 0.0
        queue.append(item)
        self._order[item] = None

    def items(self) -> list[T]:
        """Every queued item, oldest first."""
        return list(self._order)

    def oldest(self) -> T | None:
        return next(iter(self._order), None)

    def remove(self, item: T) -> bool:
        """Take out an item wherever it is; False if it is not queued."""
        if self._order.pop(item, False) is False:
            return False
        queue = self._tenants[item.tenant]
        queue.remove(item)
        if not queue:
            self._drop_tenant(item.tenant)
        return True

    def pop(self) -> T:
        """The next item by deficit round robin (IndexError when empty)."""
        if not self._order:
            raise IndexError("pop from an empty FairQueue")
        self._skip_idle_rounds()
        while True:
            tenant = self._ring[0]
            queue = self._tenants[tenant]
            head = queue[0]
            if self._deficit[tenant] >= head.cost:
                self._deficit[tenant] -= head.cost
                queue.popleft()
                del self._order[head]
                if not queue:
                    self._drop_tenant(tenant)
                return head
            self._deficit[tenant] += self._credit(tenant)
            self._ring.rotate(-1)

    def _credit(self, tenant: str) -> float:
        return self._quantum * max(self._weight(tenant), 1e-6)

    def _skip_idle_rounds(self) -> None:
        """Credit whole rounds at once when no tenant could be served for several: a request far
        larger than the quantum then costs O(tenants), not O(cost / quantum) rotations."""
        rounds = min(
            math.ceil((self._tenants[t][0].cost - self._deficit[t]) / self._credit(t))
            for t in self._ring
        )
        if rounds > 1:
            for tenant in self._ring:
                self._deficit[tenant] += (rounds - 1) * self._credit(tenant)

    def _drop_tenant(self, tenant: str) -> None:
        del self._tenants[tenant]
        del self._deficit[tenant]
        self._ring.remove(tenant)
