"""From command-line options to prompts and load points, checked before anything is sent."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

from tidegate_bench import workloads
from tidegate_bench.runner import LoadPoint
from tidegate_bench.schedule import OPEN_SHAPES, ArrivalProcess
from tidegate_bench.tokenizer import TokenCounter
from tidegate_bench.workloads import Lengths, Prompt


@dataclass(frozen=True, kw_only=True)
class WorkloadOptions:
    kind: str
    dataset: Path | None
    input_len: int
    output_len: int
    len_dist: str
    len_spread: float
    conversations: int
    turns: int
    prefixes: int
    prefix_len: int
    count: int
    seed: int


def build_workload(
    o: WorkloadOptions, counter: TokenCounter
) -> tuple[list[Prompt], dict[str, Any]]:
    """The prompts, and the ``workload`` block of the result JSON."""
    info: dict[str, Any] = {"kind": o.kind, "tokenizer": counter.exact, "seed": o.seed}
    if o.kind == "synthetic":
        if o.len_dist not in ("fixed", "uniform", "normal"):
            raise ValueError(f"--len-dist must be fixed, uniform or normal, got {o.len_dist!r}")
        dist = cast(workloads.LengthKind, o.len_dist)
        ins = Lengths(mean=o.input_len, kind=dist, spread=o.len_spread)
        outs = Lengths(mean=o.output_len, kind=dist, spread=o.len_spread)
        prompts = workloads.synthetic(
            count=o.count, input_len=ins, output_len=outs, counter=counter, seed=o.seed
        )
        info |= {"input_len": asdict(ins), "output_len": asdict(outs)}
    elif o.kind == "shared-prefix":
        prompts = workloads.shared_prefix(
            conversations=o.conversations, turns=o.turns, prefixes=o.prefixes,
            prefix_len=o.prefix_len, input_len=o.input_len, output_len=o.output_len,
            counter=counter, seed=o.seed,
        )  # fmt: skip
        info |= {
            "conversations": o.conversations, "turns": o.turns, "prefixes": o.prefixes,
            "prefix_len": o.prefix_len, "input_len": o.input_len, "output_len": o.output_len,
        }  # fmt: skip
    elif o.kind == "jsonl":
        if o.dataset is None:
            raise ValueError("--workload jsonl needs --dataset FILE.jsonl")
        prompts = workloads.from_jsonl(o.dataset, default_max_tokens=o.output_len, counter=counter)
        info |= {"dataset": str(o.dataset), "prompts": len(prompts)}
    else:
        raise ValueError(f"--workload must be synthetic, shared-prefix or jsonl, got {o.kind!r}")
    return prompts, info


def _numbers(text: str, name: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise ValueError(f"{name} must be comma-separated numbers, got {text!r}") from exc
    if not values or any(v <= 0 for v in values):
        raise ValueError(f"{name} needs positive numbers, got {text!r}")
    return values


def load_points(
    *,
    concurrency: str | None,
    rate: str | None,
    shape: str,
    burstiness: float,
    on_s: float,
    off_s: float,
    ramp_start: float,
) -> list[LoadPoint]:
    if concurrency and rate:
        raise ValueError("give --concurrency (closed loop) or --rate (open loop), not both")
    if rate:
        if shape not in OPEN_SHAPES:
            raise ValueError(f"--shape must be one of {', '.join(OPEN_SHAPES)}, got {shape!r}")
        return [
            LoadPoint(
                label=f"rate={r:g}",
                process=ArrivalProcess(
                    shape=shape,
                    rate=r,
                    burstiness=burstiness,
                    on_s=on_s,
                    off_s=off_s,
                    rate_start=ramp_start,
                ),
            )  # fmt: skip
            for r in _numbers(rate, "--rate")
        ]
    values = _numbers(concurrency or "1", "--concurrency")
    if any(v != int(v) for v in values):
        raise ValueError("--concurrency takes whole numbers")
    return [LoadPoint(label=f"c={int(c)}", concurrency=int(c)) for c in values]
