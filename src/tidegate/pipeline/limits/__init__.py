"""Rate limits, concurrency limits and budgets, in this process or shared through Redis.

factory.py      build_limiter(limits=config.limits, pricing=config.pricing, registry=...)
limiter.py      Limiter.admit(...) -> Admission; Admission.settle(...)
model.py        what a store is asked (Demand) and answers (Verdict); the store protocol
layout.py       where each kind of tenancy.limit_kinds.KINDS (the one table of limit kinds)
                sits in a Demand, a Verdict and the scripts' KEYS and ARGV
memory.py       the in-process store (the embedded default)
redis_store.py  the Redis store (atomic Lua scripts in lua.py), shared by gateway replicas
redis_client.py its connections: bounded pool, connect timeout and retries, warm-up
headers.py      x-ratelimit-* headers · refusals.py the 429 messages · periods.py UTC periods
"""

from __future__ import annotations

from tidegate.pipeline.limits.factory import build_limit_store, build_limiter
from tidegate.pipeline.limits.limiter import Admission, Limiter
from tidegate.pipeline.limits.memory import MemoryLimitStore
from tidegate.pipeline.limits.metrics import LimiterMetrics
from tidegate.pipeline.limits.redis_store import RedisLimitStore

__all__ = [
    "Admission",
    "Limiter",
    "LimiterMetrics",
    "MemoryLimitStore",
    "RedisLimitStore",
    "build_limit_store",
    "build_limiter",
]
