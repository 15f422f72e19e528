"""Per-model facts validation needs (context length, tokenizer), gathered from the config.

A pool whose config gives no context length may learn it later from its engine
(``gateway.context_lengths``), which sets ``ModelLimits.context_length`` on the pool's entry:
every model name validated against that pool sees it."""

from __future__ import annotations

import logging
from concurrent.futures import Executor
from pathlib import Path

from tidegate.config import Config
from tidegate.pipeline.tokens import PromptCounter
from tidegate.pipeline.validation import ModelLimits

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
    return models_for_pools(
        config, pool_limits(config, local_model_dir=local_model_dir, executor=executor)
    )


def pool_limits(
    config: Config, *, local_model_dir: str | None, executor: Executor
) -> dict[str, ModelLimits]:
    """Each pool's limits, by pool name."""
    by_pool: dict[str, ModelLimits] = {}
    counters: dict[str, PromptCounter | None] = {}
    for upstream in config.upstreams:
        # Each pool's own limits (its first upstream's): pools serving one model name may
        # differ (a local 4k context, a remote 200k one), and a route follows its primary pool.
        name = upstream.pool or upstream.model
        if name in by_pool:
            continue
        tokenizer = upstream.tokenizer
        if tokenizer and tokenizer not in counters:
            counters[tokenizer] = _counter(tokenizer, executor)
        by_pool[name] = ModelLimits(
            context_length=upstream.context_length,
            counter=counters[tokenizer] if tokenizer else None,
        )
    engines = config.engines
    local_counter = _counter(local_model_dir, executor) if local_model_dir else None
    for local in engines.local_pools():
        # Each local pool's own context length (the max_model_len its engines are started
        # with); the tokenizer is the main model's, so a pool loading another model counts
        # nothing before its engine.
        by_pool[local.name] = ModelLimits(
            context_length=local.profile.max_model_len,
            counter=local_counter if local.model == engines.model else None,
        )
    return by_pool


def models_for_pools(config: Config, by_pool: dict[str, ModelLimits]) -> dict[str, ModelLimits]:
    """Public model name → the limits it is validated with (the pool entries themselves)."""
    limits: dict[str, ModelLimits] = {}
    for upstream in config.upstreams:
        limits.setdefault(upstream.model, by_pool[upstream.pool or upstream.model])
    engines = config.engines
    if engines.replicas > 0:
        limits[engines.served_model_name] = by_pool[engines.served_model_name]
    # A LoRA adapter counts and fits like its base model (same tokenizer, same context).
    for local in engines.local_pools():
        for adapter in local.adapters:
            limits.setdefault(adapter.name, by_pool[local.name])
    # A configured route is validated like its primary pool's model.
    for route in config.routing.routes:
        primary = by_pool.get(route.pools[0])
        if primary is not None:
            limits[route.model] = primary
    return limits
