"""The gateway's scheduler: per-pool admission by replica capacity, priority classes, fair
sharing between tenants, bounded queues with timeouts and deadlines.

``Scheduler.acquire`` hands out a ``Slot`` per request (at once when the pool has room and nothing
waits; otherwise after queueing); ``Slot.release`` gives it back exactly once when the upstream
exchange ends. See ``pool_queue`` for the discipline, and ``cluster`` for how several gateway
replicas share each pool's capacity (a background heartbeat sets each queue's share).
"""

from tidegate.scheduling.classes import (
    CLASSES,
    ENGINE_PRIORITY,
    PriorityClass,
    parse_deadline_ms,
    resolve_class,
)
from tidegate.scheduling.fair_queue import FairQueue
from tidegate.scheduling.pool_queue import PoolQueue, Slot, Waiter
from tidegate.scheduling.scheduler import Scheduler

__all__ = [
    "CLASSES",
    "ENGINE_PRIORITY",
    "FairQueue",
    "PoolQueue",
    "PriorityClass",
    "Scheduler",
    "Slot",
    "Waiter",
    "parse_deadline_ms",
    "resolve_class",
]
