"""``make bench-burst``: one real vLLM CPU replica at min, max 2, a burst of 4x its capacity for
60 s: TTFT p95 with a fixed single replica, with autoscaling and with one warm standby, the time
from the burst's start to the second replica's first request, and the simulator's prediction of
each next to the measurement.

    python -m benchmarks.burst [--configs fixed,autoscale,standby] [--burst-s 60]
        [--capacity-multiple 4] [--baseline-fraction 0.5] [--out bench-results/burst.json]

Each configuration is its own ``tidegate up`` with the bundled model on local CPU replicas (the
shared engine venv and model of ``make engine``), in a fresh home:

- ``fixed``: one replica, no autoscaling;
- ``autoscale``: ``engines.autoscaling`` min 1, max 2, signal in_flight_per_replica with the
  replica's max_num_seqs as target (scale up as soon as requests wait);
- ``standby``: the same with ``warm_standby: 1`` (the second replica loaded before the burst
  and promoted when the policy asks for it).

The first gateway (``fixed``) is also the calibration: closed-loop runs at concurrency 1 and
max_num_seqs give the replica's capacity (req/s at max_num_seqs, which sizes the load) and the
simulator's pool model (``tidegate.plan.pool_model.from_bench``); its spawn-to-ready time is the
simulator's cold start. Then the same seeded burst (``tidegate bench run --scenario burst``'s
runner: a baseline at ``--baseline-fraction`` of capacity, the burst at ``--capacity-multiple``
of capacity, a cool-down) runs against each configuration, and ``tidegate plan simulate``'s
engine replays the very requests sent against the pool model and the same policy. Every run's
bench JSON (with its ``burst`` block, CSVs beside it, ``tidegate bench report`` draws it) is
written next to ``--out``. It reports and never asserts.

Each configuration is predicted twice: ``nominal`` (the idle-host model above) and
``shared-host``: the same model with a host speedup, a loading replica's share of the host and
the cold start of a replica loading while another serves, all derived from the three runs'
own measurements (``benchmarks.burst_shared``, which says which figure is calibrated from the
run it predicts). ``--resimulate bench-results/burst.json`` recomputes the measured figures
from the saved request CSVs and both predictions, without any engine, and rewrites the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import yaml
from rich.console import Console
from rich.table import Table

from benchmarks.burst_shared import comparison, resimulate, shared_host_rows
from benchmarks.burst_sim import measured, predict, relative_error
from benchmarks.targets import free_port
from tidegate.config import AutoscalingPolicy, SchedulingConfig, load_config
from tidegate.engines.state_file import STATE_FILE_NAME, read_state
from tidegate.plan.pool_model import PoolModel, from_bench
from tidegate.plan.simulate import QueueSettings
from tidegate_bench.burst.gateway_metrics import parse_sample
from tidegate_bench.burst.run import GatewayWatch, run_burst
from tidegate_bench.burst.scraper import default_metrics_url
from tidegate_bench.phases import BurstPlan
from tidegate_bench.results import build_document, report_header, run_standalone, write_document
from tidegate_bench.runner import LoadPoint, LoadRunner, RunSettings
from tidegate_bench.schedule import ArrivalProcess
from tidegate_bench.spec import Slo, Target
from tidegate_bench.tokenizer import TokenCounter
from tidegate_bench.workloads import Lengths, Prompt, synthetic

CONFIGS = ("fixed", "autoscale", "standby")
SERVED = "smollm2-135m-instruct"


@dataclass(frozen=True)
class Options:
    configs: tuple[str, ...] = CONFIGS
    baseline_s: float = 20.0
    burst_s: float = 60.0
    cooldown_s: float = 40.0
    capacity_multiple: float = 4.0
    """The burst's load, in multiples of one replica's capacity."""
    baseline_fraction: float = 0.5
    """The baseline's (and cool-down's) load, as a fraction of one replica's capacity."""
    max_num_seqs: int = 8
    input_len: int = 64
    output_len: int = 32
    calibrate_s: float = 15.0
    scale_down_s: float = 30.0
    """scale_down_stabilization_s and cooldown_s of the autoscaling configurations."""
    ready_timeout_s: float = 900.0
    seed: int = 0
    out: Path = Path("bench-results/burst.json")
    resimulate: Path | None = None
    """A saved report: recompute its predictions from its request CSVs, run no engine."""
    venv: str = ""
    """The engine venv (empty: the shared one of ``make engine``)."""
    model: str = ""
    """What the replicas serve (empty: the bundled model)."""
    engine_args: tuple[str, ...] = ()
    """More arguments for each replica (engines.profile.extra_args)."""
    engine_env: tuple[tuple[str, str], ...] = ()


def policy_of(name: str, options: Options) -> AutoscalingPolicy | None:
    """The configuration's autoscaling policy (None: a fixed single replica)."""
    if name == "fixed":
        return None
    return AutoscalingPolicy(
        enabled=True, min_replicas=1, max_replicas=2, warm_standby=1 if name == "standby" else 0,
        signal="in_flight_per_replica", target=float(options.max_num_seqs),
        scale_up_stabilization_s=0.0, scale_down_stabilization_s=options.scale_down_s,
        cooldown_s=options.scale_down_s, idle_scale_to_min_s=0.0, evaluation_interval_s=1.0,
    )  # fmt: skip


def gateway_config(
    home: Path, policy: AutoscalingPolicy | None, options: Options
) -> dict[str, Any]:
    shared = load_config()
    engines: dict[str, Any] = {
        "venv": options.venv or str(shared.engine_venv),
        "replicas": 1,
        "ready_timeout_s": options.ready_timeout_s,
        "health_interval_s": 0.5,
        "drain_grace_s": 5.0,
        "stop_timeout_s": 15.0,
        "profile": {
            "device": "cpu", "enforce_eager": True, "max_model_len": 1024,
            "max_num_seqs": options.max_num_seqs, "extra_args": list(options.engine_args),
            "extra_env": dict(options.engine_env),
        },
    }  # fmt: skip
    if options.model:
        engines["model"] = options.model
    if policy is not None:
        engines["autoscaling"] = policy.model_dump(mode="json")
    (home / "models").symlink_to(shared.models_dir, target_is_directory=True)
    return {"home": str(home), "server": {"access_log": False}, "engines": engines}


@dataclass(frozen=True)
class Gateway:
    url: str
    key: str
    spawn_to_ready_s: float
    """From ``tidegate up`` to /readyz 200."""
    replica_load_s: float | None
    """The first replica's own start to ready (engines.json), the simulator's cold start."""
    log: Path


def _get(url: str, key: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except OSError:
        return 0, b""


@contextlib.asynccontextmanager
async def gateway(
    name: str, work: Path, policy: AutoscalingPolicy | None, options: Options
) -> AsyncIterator[Gateway]:
    """``tidegate up`` for one configuration, ready with its standbys loaded; stopped (with its
    replicas) on the way out."""
    home = work / name
    home.mkdir()
    path = home / "tidegate.yaml"
    path.write_text(yaml.safe_dump(gateway_config(home, policy, options)))
    port, key = free_port(), "tg-bench-" + secrets.token_hex(16)
    log = home / "gateway.log"
    tidegate = Path(sys.executable).with_name("tidegate")
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(tidegate), "up", "--config", str(path), "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "TIDEGATE_ADMIN_KEY": key, "TIDEGATE_HOME": str(home)},
        )  # fmt: skip
    origin = f"http://127.0.0.1:{port}"
    try:
        standby = policy.warm_standby if policy is not None else 0
        ready_s = await _wait_ready(proc, origin, key, standby, options.ready_timeout_s, log)
        state = read_state(home / "state" / STATE_FILE_NAME)
        loads = [
            r.ready_at - r.started_at
            for r in (state.replicas if state is not None else ())
            if r.ready_at is not None and r.started_at is not None
        ]
        yield Gateway(origin + "/v1", key, ready_s - started, min(loads, default=None), log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)  # the supervisor stops its vLLM replicas first
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _wait_ready(
    proc: subprocess.Popen[bytes], origin: str, key: str, standby: int, timeout_s: float, log: Path
) -> float:
    """When /readyz answered 200 (monotonic); then waits for ``standby`` warm standbys."""
    deadline = time.monotonic() + timeout_s
    ready_at: float | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise RuntimeError(f"tidegate exited with {proc.returncode}; {log} ends:\n{tail}")
        if ready_at is None and _get(origin + "/readyz", key)[0] == 200:
            ready_at = time.monotonic()
        if ready_at is not None:
            status, body = _get(origin + "/metrics", key)
            sample = parse_sample(body.decode()) if status == 200 else None
            loaded = sum(s.get("standby", 0) for s in sample.replicas.values()) if sample else 0
            if loaded >= standby:
                return ready_at
        await asyncio.sleep(0.5)
    raise RuntimeError(f"tidegate was not ready in {timeout_s:.0f} s; see {log}")


def _prompts(options: Options, count: int) -> list[Prompt]:
    return synthetic(
        count=count, input_len=Lengths(mean=options.input_len),
        output_len=Lengths(mean=options.output_len), counter=TokenCounter(None), seed=options.seed,
    )  # fmt: skip


async def calibrate(gw: Gateway, options: Options, out_dir: Path, console: Console) -> Path:
    """Closed loop at concurrency 1 and max_num_seqs through the fixed gateway (never more than
    its slots, so nothing waits in its queue): the bench JSON the pool model is fitted from."""
    target = Target(name="replica", url=gw.url, model=SERVED, key=gw.key)
    settings = RunSettings(duration_s=options.calibrate_s, ignore_eos=True, seed=options.seed)
    prompts = _prompts(options, 2000)
    results = []
    for c in sorted({1, options.max_num_seqs}):
        runner = LoadRunner(
            targets=[(target, SERVED)], prompts=prompts, tenants=[], settings=settings,
            counter=TokenCounter(None),
        )  # fmt: skip
        try:
            results.append(await runner.run(LoadPoint(label=f"c={c}", concurrency=c)))
        finally:
            runner.close()
        console.log(f"calibration c={c}: {len(results[-1].records['replica'])} requests")
    path = out_dir / "calibration.json"
    document = build_document(
        command="python -m benchmarks.burst (calibration)", workload={"kind": "synthetic"},
        results=results, targets=[(target, SERVED)], slo=Slo(), json_path=path,
        seed=options.seed, min_effect=0.05,
    )  # fmt: skip
    write_document(path, document)
    return path


async def burst_run(
    name: str, gw: Gateway, rate: float, plan: BurstPlan, options: Options, out_dir: Path
) -> tuple[dict[str, Any], Any]:
    target = Target(name=name, url=gw.url, model=SERVED, key=gw.key)
    process = ArrivalProcess(shape="poisson", rate=rate)
    point = LoadPoint(label=f"burst {name}", process=process, phases=plan.phases())
    settings = RunSettings(
        duration_s=plan.total_s, ignore_eos=True, seed=options.seed, timeout_s=120.0
    )
    outcome = await run_burst(
        target=target, point=point, plan=plan, settings=settings,
        prompts=_prompts(options, 4000), tenants=[], counter=TokenCounter(None),
        watch=GatewayWatch(url=default_metrics_url(gw.url), token=gw.key), sla=None,
    )  # fmt: skip
    path = out_dir / f"{name}.json"
    document = build_document(
        command=f"python -m benchmarks.burst ({name})", workload={"kind": "synthetic"},
        results=[outcome.result], targets=[(target, SERVED)], slo=Slo(), json_path=path,
        seed=options.seed, min_effect=0.05,
    )  # fmt: skip
    document["scenario"] = "burst"
    document["runs"][0]["burst"] = outcome.block
    write_document(path, document)
    return outcome.block, outcome.result.records[name]


@dataclass(frozen=True)
class _Setup:
    """What every configuration's run shares: the load, the plan and the simulator's inputs."""

    rate: float
    plan: BurstPlan
    pool: PoolModel
    queue: QueueSettings


async def _configuration(
    name: str, gw: Gateway, setup: _Setup, options: Options, out_dir: Path, console: Console
) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """One configuration's burst, measured and simulated."""
    console.log(f"{name}: bursting")
    policy = policy_of(name, options)
    block, records = await burst_run(name, gw, setup.rate, setup.plan, options, out_dir)
    phases = setup.plan.phases()
    mine = measured(records, block, phases)
    predicted, _ = predict(
        records, pool=setup.pool, policy=policy, queue=setup.queue, phases=phases
    )
    console.log(f"{name}: done")
    return records, block, {
        "config": name,
        "policy": None if policy is None else policy.model_dump(mode="json"),
        "measured": mine.as_json(), "simulated": predicted.as_json(),
        "phases": block["phases"], "scale_up": block["scale_up"],
        "result": str(out_dir / f"{name}.json"),
    }  # fmt: skip


async def run_benchmark(options: Options, console: Console) -> dict[str, Any]:
    out_dir = options.out.with_suffix("")
    out_dir.mkdir(parents=True, exist_ok=True)
    configs = [c for c in CONFIGS if c in options.configs]
    report = report_header("burst", options)
    runs: list[tuple[Any, dict[str, Any], dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="tidegate-bench-burst-") as tmp:
        work = Path(tmp)
        # The fixed gateway calibrates first, then takes its own burst (one vLLM start less).
        first = "fixed" if "fixed" in configs else "calibration"
        async with gateway(first, work, None, options) as gw:
            console.log(
                f"one replica ready {gw.spawn_to_ready_s:.1f} s after spawn (its own load "
                f"{_s(gw.replica_load_s)} s)"
            )
            calibration = await calibrate(gw, options, out_dir, console)
            doc = orjson.loads(calibration.read_bytes())
            capacity = max(t["request_throughput"] for r in doc["runs"] for t in r["targets"])
            cold_start = gw.replica_load_s if gw.replica_load_s is not None else gw.spawn_to_ready_s
            setup = _Setup(
                rate=options.baseline_fraction * capacity,
                plan=BurstPlan(
                    baseline_s=options.baseline_s, burst_s=options.burst_s,
                    cooldown_s=options.cooldown_s,
                    factor=options.capacity_multiple / options.baseline_fraction,
                ),
                pool=replace(
                    from_bench(calibration, max_concurrency=options.max_num_seqs),
                    cold_start_s=cold_start,
                ),
                queue=QueueSettings.from_config(SchedulingConfig().interactive),
            )  # fmt: skip
            console.log(
                f"capacity {capacity:.2f} req/s: baseline {setup.rate:.2f} req/s, burst "
                f"{setup.rate * setup.plan.factor:.2f} req/s for {setup.plan.burst_s:g} s"
            )
            spawn_to_ready = gw.spawn_to_ready_s
            if first == "fixed":
                runs.append(await _configuration("fixed", gw, setup, options, out_dir, console))
        for name in configs:
            if name == "fixed":
                continue
            async with gateway(name, work, policy_of(name, options), options) as gw:
                runs.append(await _configuration(name, gw, setup, options, out_dir, console))
    plan = setup.plan
    rows = [row for _, _, row in runs]
    shared = shared_host_rows(
        rows, {row["config"]: rec for rec, _, row in runs},
        {row["config"]: block for _, block, row in runs},
        pool=setup.pool, queue=setup.queue, phases=plan.phases(),
    )  # fmt: skip
    report |= {
        "capacity_rps": capacity, "baseline_rps": setup.rate, "burst_rps": setup.rate * plan.factor,
        "plan": {"baseline_s": plan.baseline_s, "burst_s": plan.burst_s,
                 "cooldown_s": plan.cooldown_s, "factor": plan.factor},
        "pool_model": setup.pool.as_json(), "calibration": str(calibration), "configs": rows,
        "gateway_spawn_to_ready_s": spawn_to_ready, "shared_host": shared,
    }  # fmt: skip
    return report


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _pair(m: float | None, s: float | None) -> str:
    err = relative_error(m, s)
    tail = "" if err is None else f" ({err * 100:+.0f}%)"
    return f"{_s(m)} / {_s(s)}{tail}"


def render(report: dict[str, Any], console: Console) -> None:
    table = Table(
        title=f"tidegate bench burst: capacity {report['capacity_rps']:.2f} req/s, burst "
        f"{report['burst_rps']:.2f} req/s for {report['plan']['burst_s']:g} s "
        "(measured / simulated, simulated vs measured)",
        header_style="bold",
    )
    for col in ("config", "TTFT p95 burst s", "TTFT p95 run s", "2nd replica ready s",
                "2nd replica 1st request s", "429", "503", "peak ready"):  # fmt: skip
        table.add_column(col, justify="left" if col == "config" else "right")
    for row in report["configs"]:
        m, s = row["measured"], row["simulated"]
        table.add_row(
            row["config"], _pair(m["ttft_p95_s"]["burst"], s["ttft_p95_s"]["burst"]),
            _pair(m["ttft_p95_s"]["run"], s["ttft_p95_s"]["run"]),
            _pair(m["to_ready_up_s"], s["to_ready_up_s"]),
            _pair(m["to_new_replica_first_request_s"], s["to_new_replica_first_request_s"]),
            f"{m['http_429']} / {s['http_429']}", f"{m['http_503']} / {s['http_503']}",
            f"{m['peak_ready'] if m['peak_ready'] is not None else '-'} / {s['peak_ready']}",
        )  # fmt: skip
    console.print(table)
    _render_comparison(report, console)
    pm = report["pool_model"]
    console.print(
        f"pool model: first token {pm['first_token_s']:.3f} s, TPOT {pm['tpot_s'] * 1000:.1f} ms, "
        f"slowdown {pm['slowdown']:.3f}/request, cold start {pm['cold_start_s']:.0f} s"
    )


def _v(value: float | None, count: bool, bound: float | None = None) -> str:
    if bound is not None:
        return f"never (>= {bound:.0f})"
    if value is None:
        return "-"
    return f"{value:.0f}" if count else f"{value:.1f}"


def _render_comparison(report: dict[str, Any], console: Console) -> None:
    if "shared_host" not in report:
        return
    table = Table(
        title="measured vs nominal (idle-host) vs shared-host prediction; within 25%? "
        "(* calibrated from this run; leave-one-out: without this run's own calibration)",
        header_style="bold",
    )
    columns = ("config", "metric", "measured", "nominal", "shared-host", "leave-one-out")
    for col in (*columns, "within 25% (nominal / shared / l-o-o)"):
        table.add_column(col, justify="left" if col in ("config", "metric") else "right")
    for e in comparison(report):
        n = e["count"]
        verdicts = " / ".join(
            e.get(f"{m}_within", "-") for m in ("simulated", "shared_host", "out_of_sample")
        )
        table.add_row(
            e["config"], e["metric"], _v(e["measured"], n, e["measured_at_least"]),
            _v(e.get("simulated"), n),
            _v(e.get("shared_host"), n) + ("*" if e["circular"] else ""),
            _v(e.get("out_of_sample"), n), verdicts,
        )  # fmt: skip
    console.print(table)
    host = report["shared_host"]
    for field, source in host["sources"].items():
        console.print(f"shared host {field}: {source}")


def _parse_args(argv: list[str] | None) -> Options:
    d = Options()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--configs", default=",".join(d.configs))
    floats = ["baseline_s", "burst_s", "cooldown_s", "capacity_multiple", "baseline_fraction"]
    floats += ["calibrate_s", "scale_down_s", "ready_timeout_s"]
    for name in floats:
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(d, name))
    for name in ("max_num_seqs", "input_len", "output_len", "seed"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    parser.add_argument("--out", type=Path, default=d.out)
    parser.add_argument(
        "--resimulate", type=Path, default=None, metavar="REPORT.json",
        help="recompute a saved report's predictions from its request CSVs (no engine) and "
        "rewrite it (to --out when given)",
    )  # fmt: skip
    parser.add_argument("--venv", default=d.venv, help="engine venv (default: the shared one)")
    parser.add_argument("--model", default=d.model, help="model (default: the bundled one)")
    a = parser.parse_args(argv)
    configs = tuple(c.strip() for c in a.configs.split(",") if c.strip())
    if unknown := [c for c in configs if c not in CONFIGS]:
        parser.error(f"--configs: unknown {', '.join(unknown)} (known: {', '.join(CONFIGS)})")
    values = {k: v for k, v in vars(a).items() if k != "configs"}
    if a.resimulate is not None and "--out" not in (argv if argv is not None else sys.argv):
        values["out"] = a.resimulate
    return Options(configs=configs, **values)


def main(argv: list[str] | None = None) -> None:
    options = _parse_args(argv)
    if options.resimulate is not None:
        report = resimulate(options.resimulate)
        console = Console(width=None if sys.stdout.isatty() else 170)
        render(report, console)
        write_document(options.out, report)
        console.print(f"wrote {options.out}")
        return
    run_standalone(options, run_benchmark, render)


if __name__ == "__main__":
    main()
