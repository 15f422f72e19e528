"""Context lengths learned from the engines, for pools whose config gives none.

vLLM lists each model's ``max_model_len`` at ``GET /v1/models``. For every OpenAI-compatible
upstream without a ``context_length`` this asks it once at start (bounded by ``timeout_s``, so a
dead upstream delays start by at most that) and again every ``interval_s``, and sets the pool's
``ModelLimits.context_length`` to the smallest length its upstreams report: the validator then
checks prompt + max_tokens against it and reserves a request without max_tokens up to it, as
for a configured ``context_length``. An engine that lists no length leaves the pool unknown.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import aiohttp

from tidegate.background import Periodic
from tidegate.config import Config
from tidegate.pipeline.validation import ModelLimits
from tidegate.upstream.model_cards import max_model_len

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Target:
    pool: str
    base_url: str
    model: str
    api_key: str | None


class ContextLengths:
    def __init__(
        self,
        *,
        config: Config,
        pools: dict[str, ModelLimits],
        session: aiohttp.ClientSession,
        interval_s: float = 60.0,
        timeout_s: float = 2.0,
    ) -> None:
        """``pools``: the validator's entries by pool name (``model_limits.pool_limits``)."""
        configured = {u.pool or u.model for u in config.upstreams if u.context_length}
        self._targets = [
            _Target(
                pool=u.pool or u.model,
                base_url=u.url,
                model=u.upstream_model or u.model,
                api_key=u.resolved_api_key(),
            )
            for u in config.upstreams
            # A pool with a configured length keeps it; local pools know theirs.
            if u.provider == "openai" and (u.pool or u.model) not in configured
        ]
        self._pools = pools
        self._session = session
        self._timeout_s = timeout_s
        self._periodic = Periodic(
            name="context-lengths", interval_s=interval_s, step=self._round_logged
        )

    async def start(self) -> None:
        if not self._targets:
            return
        await self._round_logged()
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    async def refresh(self) -> None:
        """Ask every target once and apply what they say."""
        lengths = await asyncio.gather(
            *(
                max_model_len(
                    self._session,
                    t.base_url,
                    t.model,
                    api_key=t.api_key,
                    timeout_s=self._timeout_s,
                )
                for t in self._targets
            )
        )
        learned: dict[str, int] = {}
        for target, length in zip(self._targets, lengths, strict=True):
            if length is not None:
                # Replicas of one pool may differ: the smallest holds for all of them.
                learned[target.pool] = min(length, learned.get(target.pool, length))
        for pool, length in learned.items():
            limits = self._pools.get(pool)
            if limits is not None and limits.context_length != length:
                log.info("pool %s: context length %d (the engine's max_model_len)", pool, length)
                limits.context_length = length

    async def _round_logged(self) -> None:
        try:
            await self.refresh()
        except Exception:  # the loop must outlive any one bad round
            log.exception("learning context lengths failed")
