"""Run one burst: resolve the model, probe the gateway's /metrics, drive the phases while the
scraper samples the replicas, and build the run's ``burst`` block."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tidegate_bench.burst.scraper import GatewayScraper, ScrapeLog
from tidegate_bench.burst.sla import Sla
from tidegate_bench.burst.summary import burst_block
from tidegate_bench.phases import BurstPlan
from tidegate_bench.records import RequestRecord
from tidegate_bench.runner import LoadPoint, LoadRunner, PointResult, RunSettings, resolve_model
from tidegate_bench.spec import Target, Tenant
from tidegate_bench.tokenizer import TokenCounter
from tidegate_bench.workloads import Prompt


@dataclass(frozen=True, kw_only=True)
class GatewayWatch:
    """Where the gateway's metrics are and how often to read them (url None: not at all)."""

    url: str | None
    token: str | None
    interval_s: float = 1.0
    pools: tuple[str, ...] = ()


@dataclass(frozen=True)
class BurstOutcome:
    model: str
    result: PointResult
    block: dict[str, Any]


async def run_burst(
    *,
    target: Target,
    point: LoadPoint,
    plan: BurstPlan,
    settings: RunSettings,
    prompts: Sequence[Prompt],
    tenants: Sequence[Tenant],
    counter: TokenCounter,
    watch: GatewayWatch,
    sla: Sla | None,
    on_record: Callable[[RequestRecord], None] | None = None,
    warn: Callable[[str], None] = lambda _: None,
) -> BurstOutcome:
    model = await resolve_model(target, timeout_s=settings.timeout_s)
    scraper: GatewayScraper | None = None
    error = ""
    if watch.url is not None:
        scraper = GatewayScraper(
            url=watch.url, token=watch.token, interval_s=watch.interval_s, pools=watch.pools
        )
        try:
            await scraper.scrape()
        except ValueError as exc:
            error = str(exc)
            warn(f"no gateway metrics (replicas, queue wait): {error}")
            scraper.close()
            scraper = None
    phases = point.phases
    boundaries = [p.start_s for p in phases] + [phases[-1].end_s]
    started_unix = 0.0

    def started(t0: float) -> None:
        nonlocal started_unix
        started_unix = time.time()
        if scraper is not None:
            scraper.align(t0, boundaries)

    runner = LoadRunner(
        targets=[(target, model)], prompts=prompts, tenants=tenants, settings=settings,
        counter=counter, on_record=on_record, on_start=started,
    )  # fmt: skip
    log: ScrapeLog | None = None
    if scraper is not None:
        scraper.start()
    try:
        result = await runner.run(point)
    finally:
        runner.close()
        if scraper is not None:
            log = await scraper.stop()
    block = burst_block(
        plan=plan, records=result.records[target.name], scrapes=log, metrics_url=watch.url,
        metrics_error=error, started_unix=started_unix, sla=sla,
    )  # fmt: skip
    return BurstOutcome(model, result, block)
