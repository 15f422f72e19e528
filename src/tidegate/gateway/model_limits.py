"""Per-model facts validation needs (context length, tokenizer), gathered from the config."""

from __future__ import annotations

import logging
from concurrent.futures import Executor
from pathlib import Path

from tidegate.config import Config
from tidegate.gateway.tokens import PromptCounter
from tidegate.gateway.validation import ModelLimits

log = logging.getLogger(__name__)


def _counter(model_dir: str, executor: Executor) -> PromptCounter | None:
    path = Path(model_dir)
    if not (path / "tokenizer.json").is_file():
        log.warning("no tokenizer.json in %s: prompts are not counted before the engine", path)
        return None
    return PromptCounter.from_model_dir(path, executor=executor)


def model_limits(
    config: Config, *, local_model_dir: str | None, executor: Executor
) -> dict[str, ModelLimits]:
    """``local_model_dir``: what the local replicas load, when it is a directory on this host."""
    limits: dict[str, ModelLimits] = {}
    by_pool: dict[str, ModelLimits] = {}
    counters: dict[str, PromptCounter | None] = {}
    for upstream in config.upstreams:
        # Each pool's own limits (its first upstream's): pools serving one model name may
        # differ (a local 4k context, a remote 200k one), and a route follows its primary pool.
        pool = by_pool.get(upstream.pool or upstream.model)
        if pool is None:
            tokenizer = upstream.tokenizer
            if tokenizer and tokenizer not in counters:
                counters[tokenizer] = _counter(tokenizer, executor)
            pool = by_pool[upstream.pool or upstream.model] = ModelLimits(
                context_length=upstream.context_length,
                counter=counters[tokenizer] if tokenizer else None,
            )
        limits.setdefault(upstream.model, pool)
    engines = config.engines
    local_counter = _counter(local_model_dir, executor) if local_model_dir else None
    for local in engines.local_pools():
        # Each local pool's own context length; the tokenizer is the main model's, so a pool
        # loading another model counts nothing before its engine.
        by_pool[local.name] = ModelLimits(
            context_length=local.profile.max_model_len,
            counter=local_counter if local.model == engines.model else None,
        )
    if engines.replicas > 0:
        limits[engines.served_model_name] = by_pool[engines.served_model_name]
    # A configured route is validated like its primary pool's model.
    for route in config.routing.routes:
        primary = by_pool.get(route.pools[0])
        if primary is not None:
            limits[route.model] = primary
    return limits
