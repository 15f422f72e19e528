"""Cache-affine balancing: round robin, least-outstanding and prefix affinity on two replicas.

    python -m benchmarks.affinity [--conversations 21] [--turns 4] [--out PATH]

Two local vLLM CPU replicas of the bundled model are started by tidegate's engine supervisor
(``engines.replicas: 2``) from the shared engine venv and model (``make engine``), each with a
KV cache shrunk to ``--kv-blocks`` blocks of ``--block-size`` tokens: the conversations' prefixes
do not all fit in one replica's cache, but half of them do. For each balancer in turn a
``tidegate up`` gateway is started in front of both replicas (one pool, its ``balancer`` set to
the strategy), both prefix caches are reset (vLLM's dev-mode ``/reset_prefix_cache``), and:

- every conversation sends its opening turn (its own long system prompt and a question): a cold
  prefill whatever the balancer does, so it is sent first and not measured;
- then every conversation sends ``--turns`` follow-up turns, each repeating the whole history
  (as chat clients do), ``--concurrency`` requests in flight at most. These are measured: TTFT
  at the client, the prefix-cache hit rate from the replicas' own counters
  (``vllm:prefix_cache_hits`` / ``vllm:prefix_cache_queries``, before and after), and how many
  requests each replica served (``vllm:request_success``).

No session header is sent: prefix affinity keys on the content hash. It reports and never
asserts; the check lines compare with the targets (affinity at least doubles round robin's hit
rate, lowers its TTFT p95 by at least 50%, and no replica serves more than 1.25x the mean).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import secrets
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from benchmarks.engines import ready_engines
from benchmarks.targets import Launch, Processes, free_port
from tidegate.config import Config, EngineProfile, EnginesConfig, load_config
from tidegate.engines.shared_home import with_shared_engine
from tidegate.routing.replicas import Replica
from tidegate_bench.stats import percentile

STRATEGIES = ("round_robin", "least_outstanding", "prefix_affinity")
HIT_RATE_TARGET = 2.0
TTFT_P95_TARGET = 0.5
LOAD_TARGET = 1.25
_WORDS = (
    "harbour lantern orchard granite meadow copper violet thunder saddle pepper marble "
    "compass willow falcon ember glacier walnut canyon beacon timber velvet quarry nectar "
    "prairie cobalt juniper tundra ribbon anchor parsley summit cedar mosaic tidal amber "
    "pilgrim basalt orchid plume sorrel ferry kettle lagoon meteor garnet thistle"
).split()
_QUESTIONS = (
    "Summarise that in one line.",
    "Give me one more example.",
    "Why does that matter?",
    "What would you change first?",
    "Explain it to a child.",
    "Which part is the hardest?",
)


@dataclass(frozen=True)
class Options:
    conversations: int = 21
    """Odd on purpose: with an even count, round robin over conversations taking turns in a
    fixed order would send each conversation to the same replica every time (affinity by
    accident), which real traffic does not do. Not fewer: with 15 the hash ring happened to put
    9 conversations on one replica and 6 on the other, a small sample's luck that overfilled one
    cache (21 split 11 / 10)."""
    turns: int = 4
    """Measured follow-up turns per conversation (after its unmeasured opening)."""
    system_words: int = 200
    """Length of each conversation's own system prompt (about one token per word)."""
    concurrency: int = 4
    max_tokens: int = 4
    block_size: int = 32
    kv_blocks: int = 150
    """KV cache blocks per replica (vLLM --num-gpu-blocks-override): 4,800 tokens by default.
    Each conversation's history takes about 11 blocks (a ~256-token opening growing by ~22
    tokens a turn): the 21 histories (~230 blocks) do not fit in one replica, half of them do."""
    load_factor: float = 1.25
    ready_timeout_s: float = 300.0
    seed: int = 1
    out: Path = Path("bench-results/affinity.json")


@dataclass
class StrategyResult:
    strategy: str
    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    hit_rate: float | None = None
    prefix_hits: float = 0.0
    prefix_queries: float = 0.0
    ttft_p50_s: float | None = None
    ttft_p95_s: float | None = None
    opening_ttft_p50_s: float | None = None
    served: dict[str, float] = field(default_factory=dict)
    """Measured requests each replica finished (its vllm:request_success counter)."""
    backends: dict[str, int] = field(default_factory=dict)
    """Measured requests per x-tidegate-backend response header."""
    max_load_over_mean: float | None = None
    wall_s: float = 0.0


@dataclass
class _Conversation:
    messages: list[dict[str, str]]


@dataclass
class _Outcome:
    ttft_s: float | None = None
    text: str = ""
    backend: str = ""
    error: str = ""


def _system_prompt(index: int, words: int, rng: random.Random) -> str:
    # Distinct from the first token on, so conversations share no prefix blocks by accident.
    body = " ".join(rng.choice(_WORDS) for _ in range(words))
    return f"Conversation {index}: you are archivist number {index}. Notes follow. {body}"


def _conversations(options: Options) -> list[_Conversation]:
    rng = random.Random(options.seed)
    return [
        _Conversation(
            [
                {"role": "system", "content": _system_prompt(i, options.system_words, rng)},
                {"role": "user", "content": f"What do the notes say about {rng.choice(_WORDS)}?"},
            ]
        )
        for i in range(options.conversations)
    ]


@dataclass(frozen=True)
class _Gateway:
    base_url: str
    model: str
    headers: dict[str, str]


async def _turn(
    session: aiohttp.ClientSession,
    gateway: _Gateway,
    messages: list[dict[str, str]],
    max_tokens: int,
) -> _Outcome:
    body = {
        "model": gateway.model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
    }
    outcome = _Outcome()
    sent = time.perf_counter()
    try:
        async with session.post(
            gateway.base_url + "/chat/completions", data=orjson.dumps(body), headers=gateway.headers
        ) as response:
            outcome.backend = response.headers.get("x-tidegate-backend", "")
            if response.status != 200:
                outcome.error = f"http_{response.status}"
                await response.read()
                return outcome
            async for line in response.content:
                if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                    continue
                choices = orjson.loads(line[6:]).get("choices") or []
                piece = (choices[0].get("delta") or {}).get("content") if choices else None
                if piece:
                    if outcome.ttft_s is None:
                        outcome.ttft_s = time.perf_counter() - sent
                    outcome.text += piece
    except (aiohttp.ClientError, TimeoutError) as error:
        outcome.error = type(error).__name__
    return outcome


async def _send(
    session: aiohttp.ClientSession,
    gateway: _Gateway,
    conversation: _Conversation,
    options: Options,
    slots: asyncio.Semaphore,
) -> _Outcome:
    async with slots:
        outcome = await _turn(session, gateway, conversation.messages, options.max_tokens)
    # The next turn repeats the history with the answer, as a chat client does.
    conversation.messages.append({"role": "assistant", "content": outcome.text or "(no answer)"})
    return outcome


async def _follow_ups(
    session: aiohttp.ClientSession,
    gateway: _Gateway,
    conversation: _Conversation,
    options: Options,
    slots: asyncio.Semaphore,
) -> list[_Outcome]:
    outcomes = []
    for turn in range(options.turns):
        question = _QUESTIONS[turn % len(_QUESTIONS)]
        conversation.messages.append({"role": "user", "content": question})
        outcomes.append(await _send(session, gateway, conversation, options, slots))
    return outcomes


async def _scrape(session: aiohttp.ClientSession, replica: Replica) -> dict[str, float]:
    """Totals of the counters this benchmark reads, summed over label sets."""
    wanted = ("vllm:prefix_cache_hits", "vllm:prefix_cache_queries", "vllm:request_success")
    root = replica.base_url.removesuffix("/v1")
    async with session.get(root + "/metrics") as response:
        text = await response.text()
    totals = dict.fromkeys(wanted, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name.removesuffix("_total")
            if name in totals and not sample.name.endswith("_created"):
                totals[name] += sample.value
    return totals


async def _reset_prefix_cache(session: aiohttp.ClientSession, replica: Replica) -> None:
    """Cold caches for every strategy. vLLM refuses while blocks are held: retry a while."""
    root = replica.base_url.removesuffix("/v1")
    for _ in range(60):
        async with session.post(root + "/reset_prefix_cache") as response:
            if response.status == 200 and (await response.json()).get("success", True):
                return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"{root}/reset_prefix_cache kept failing")


def _gateway_launch(
    *, home: Path, port: int, replicas: list[Replica], model: str, strategy: str, options: Options
) -> tuple[Launch, str]:
    admin_key = "tg-bench-" + secrets.token_hex(16)
    config = {
        "server": {"access_log": False},
        "upstreams": [
            {"url": r.base_url, "model": model, "max_concurrency": options.concurrency}
            for r in replicas
        ],
        "routing": {
            "pools": [
                {"name": model, "balancer": strategy, "affinity_load_factor": options.load_factor}
            ]
        },
    }
    path = home / f"tidegate-{strategy}.yaml"
    path.write_text(yaml.safe_dump(config))
    tidegate = Path(sys.executable).with_name("tidegate")
    launch = Launch(
        [str(tidegate), "up", "--config", str(path), "--port", str(port)],
        f"http://127.0.0.1:{port}/readyz",
        {
            "TIDEGATE_ADMIN_KEY": admin_key,
            "TIDEGATE_HOME": str(home / f"gateway-{strategy}"),
            "TIDEGATE_ENGINES__REPLICAS": "0",
        },
    )
    return launch, admin_key


async def run_strategy(
    strategy: str,
    replicas: list[Replica],
    model: str,
    home: Path,
    options: Options,
    console: Console,
) -> StrategyResult:
    port = free_port()
    launch, admin_key = _gateway_launch(
        home=home, port=port, replicas=replicas, model=model, strategy=strategy, options=options
    )
    result = StrategyResult(strategy)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
    with Processes(home) as processes:
        processes.start(f"tidegate-{strategy}", launch, 60.0)
        gateway = _Gateway(
            f"http://127.0.0.1:{port}/v1",
            model,
            {"Authorization": f"Bearer {admin_key}", "Content-Type": "application/json"},
        )
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for replica in replicas:
                await _reset_prefix_cache(session, replica)
            conversations = _conversations(options)
            slots = asyncio.Semaphore(options.concurrency)
            console.log(f"{strategy}: {len(conversations)} openings")
            openings = await asyncio.gather(
                *(_send(session, gateway, c, options, slots) for c in conversations)
            )
            before = [await _scrape(session, r) for r in replicas]
            console.log(f"{strategy}: {options.turns} follow-up turns per conversation")
            started = time.perf_counter()
            measured = await asyncio.gather(
                *(_follow_ups(session, gateway, c, options, slots) for c in conversations)
            )
            result.wall_s = time.perf_counter() - started
            after = [await _scrape(session, r) for r in replicas]
    outcomes = [o for turns in measured for o in turns]
    _summarise(result, outcomes, openings, replicas, before, after)
    return result


def _summarise(
    result: StrategyResult,
    outcomes: list[_Outcome],
    openings: list[_Outcome],
    replicas: list[Replica],
    before: list[dict[str, float]],
    after: list[dict[str, float]],
) -> None:
    result.requests = len(outcomes)
    for outcome in outcomes:
        if outcome.error:
            result.errors[outcome.error] = result.errors.get(outcome.error, 0) + 1
        if outcome.backend:
            result.backends[outcome.backend] = result.backends.get(outcome.backend, 0) + 1
    ttfts = [o.ttft_s for o in outcomes if o.ttft_s is not None]
    if ttfts:
        result.ttft_p50_s = percentile(ttfts, 50)
        result.ttft_p95_s = percentile(ttfts, 95)
    opening_ttfts = [o.ttft_s for o in openings if o.ttft_s is not None]
    if opening_ttfts:
        result.opening_ttft_p50_s = percentile(opening_ttfts, 50)

    def delta(name: str, index: int) -> float:
        return after[index][name] - before[index][name]

    result.prefix_hits = sum(delta("vllm:prefix_cache_hits", i) for i in range(len(replicas)))
    result.prefix_queries = sum(delta("vllm:prefix_cache_queries", i) for i in range(len(replicas)))
    if result.prefix_queries:
        result.hit_rate = result.prefix_hits / result.prefix_queries
    result.served = {r.id: delta("vllm:request_success", i) for i, r in enumerate(replicas)}
    total = sum(result.served.values())
    if total:
        result.max_load_over_mean = max(result.served.values()) / (total / len(replicas))


def _engine_config(home: Path, options: Options) -> Config:
    config = Config(
        engines=EnginesConfig(
            replicas=2,
            ready_timeout_s=options.ready_timeout_s,
            health_interval_s=0.5,
            drain_grace_s=2.0,
            profile=EngineProfile(
                device="cpu",
                enforce_eager=True,
                cpu_kvcache_space_gib=1,
                max_model_len=1024,
                max_num_seqs=16,
                extra_args=[
                    "--block-size",
                    str(options.block_size),
                    "--num-gpu-blocks-override",
                    str(options.kv_blocks),
                ],
                # /reset_prefix_cache lives behind vLLM's dev mode; the replicas are local and
                # only this benchmark talks to them.
                extra_env={"VLLM_SERVER_DEV_MODE": "1"},
            ),
        ),
    )
    return with_shared_engine(config, home=home, shared=load_config())


async def run_benchmark(options: Options, console: Console) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tidegate-bench-affinity-") as work:
        home = Path(work)
        config = _engine_config(home, options)
        async with ready_engines(
            config, ready_timeout_s=options.ready_timeout_s, console=console
        ) as supervisor:
            model = config.engines.served_model_name
            results = [
                await run_strategy(s, supervisor.replicas, model, home, options, console)
                for s in STRATEGIES
            ]
    return _summary(results, options)


def _summary(results: list[StrategyResult], options: Options) -> dict[str, Any]:
    by_name = {r.strategy: r for r in results}
    rr, affinity = by_name["round_robin"], by_name["prefix_affinity"]
    checks: dict[str, Any] = {}
    if rr.hit_rate is not None and affinity.hit_rate is not None:
        ratio = affinity.hit_rate / rr.hit_rate if rr.hit_rate else float("inf")
        checks["hit_rate_vs_round_robin"] = {
            "value": ratio,
            "target": f">= {HIT_RATE_TARGET:.0f}x",
            "pass": ratio >= HIT_RATE_TARGET,
        }
    if rr.ttft_p95_s and affinity.ttft_p95_s is not None:
        ratio = affinity.ttft_p95_s / rr.ttft_p95_s
        checks["ttft_p95_vs_round_robin"] = {
            "value": ratio,
            "target": f"<= {TTFT_P95_TARGET:.2f}x",
            "pass": ratio <= TTFT_P95_TARGET,
        }
    if affinity.max_load_over_mean is not None:
        checks["affinity_max_load_over_mean"] = {
            "value": affinity.max_load_over_mean,
            "target": f"<= {LOAD_TARGET}",
            "pass": affinity.max_load_over_mean <= LOAD_TARGET,
        }
    return {
        "benchmark": "affinity",
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "strategies": [asdict(r) for r in results],
        "checks": checks,
    }


def _fmt(value: float | None, unit: str = "s") -> str:
    return "-" if value is None else f"{value:.2f} {unit}".rstrip()


def render(summary: dict[str, Any], console: Console) -> None:
    table = Table(title="Balancers on two vLLM CPU replicas: measured follow-up turns")
    columns = ("balancer", "requests", "prefix hit rate", "TTFT p50", "TTFT p95")
    for column in (*columns, "per replica", "max/mean", "opening p50", "errors"):
        table.add_column(column, justify="left" if column == "balancer" else "right")
    for r in summary["strategies"]:
        hit = "-" if r["hit_rate"] is None else f"{r['hit_rate']:.1%}"
        served = " / ".join(f"{v:.0f}" for _, v in sorted(r["served"].items()))
        table.add_row(
            r["strategy"],
            str(r["requests"]),
            hit,
            _fmt(r["ttft_p50_s"]),
            _fmt(r["ttft_p95_s"]),
            served,
            _fmt(r["max_load_over_mean"], ""),
            _fmt(r["opening_ttft_p50_s"]),
            ", ".join(f"{k}: {v}" for k, v in sorted(r["errors"].items())) or "0",
        )
    console.print(table)
    for name, check in summary["checks"].items():
        verdict = "met" if check["pass"] else "MISSED"
        console.print(f"{name}: {check['value']:.2f} (target {check['target']}) {verdict}")


def _parse_args(argv: list[str] | None) -> Options:
    defaults = Options()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    for name, value in asdict(defaults).items():
        if name in ("ready_timeout_s", "out"):
            continue
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    parser.add_argument("--out", type=Path, default=defaults.out)
    args = parser.parse_args(argv)
    return Options(**{k: v for k, v in vars(args).items()})


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    options = _parse_args(argv)
    # SIGTERM (a CI timeout) unwinds like Ctrl-C, so the supervisor still stops both replicas.
    signal.signal(signal.SIGTERM, _interrupt)
    console = Console(width=140)
    summary = asyncio.run(run_benchmark(options, console))
    render(summary, console)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(summary, indent=2))
    console.print(f"wrote {options.out}")


if __name__ == "__main__":
    main()
