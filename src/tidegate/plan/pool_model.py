"""What one replica of a pool does with a request, for the scaling simulator.

A replica serves up to ``max_concurrency`` requests at once (vLLM's max_num_seqs). A request
needs ``first_token_s + prompt_tokens / prefill_tokens_per_s`` of work before its first token
and ``completion_tokens × tpot_s`` more before it ends, measured alone on the replica. With
``k`` requests on the replica each one advances at ``1 / (1 + slowdown × (k - 1))`` of that
speed (batched decoding: more sequences, slower steps). A new replica takes ``cold_start_s``
from its start to its first routed request.

A shared host (replicas on the same cores, as two CPU replicas on one machine) is described by
``host_speedup``: the total throughput of N active replicas relative to one, per N. With
``n`` active (ready or draining replicas count 1 each, a loading one ``loading_load``) every
replica's requests advance at ``host_speedup(n) / n`` of their solo speed (linear interpolation
between the entries; past the last one the total stays at the last entry: the host has no more
cores). A replica started while another one is serving requests takes ``cold_start_busy_s``
(loading competes for the cores too). Unset, both describe an idle host (linear speedup, the
same cold start), the model as it was.

The numbers come from options, or are fitted from bench results: ``from_bench`` reads a
``tidegate bench run`` JSON (TTFT and TPOT medians per closed-loop concurrency: a line through
TPOT against concurrency gives tpot_s and the slowdown) and ``cold_start_from_bench`` the JSON
of ``tidegate bench cold-start`` (spawn to healthy). Bench a single replica directly, at
concurrencies up to its max_num_seqs, so no gateway queue wait is in the figures.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tidegate.plan.errors import PlanInputError


class PoolModelError(PlanInputError):
    """A pool model option or a bench file it is fitted from is unusable."""


@dataclass(frozen=True, kw_only=True)
class PoolModel:
    max_concurrency: int
    """Requests one replica serves at once (the gateway's slots per replica)."""
    first_token_s: float
    """Work before the first token that does not depend on the prompt's length."""
    tpot_s: float
    """Seconds per output token after the first, alone on the replica."""
    prefill_tokens_per_s: float | None = None
    """Prompt tokens prefilled per second (None: prefill time is inside first_token_s)."""
    slowdown: float = 0.0
    """Per extra concurrent request, the relative slowdown of every request on the replica."""
    cold_start_s: float = 60.0
    """From a replica's start to its first routed request."""
    host_speedup: tuple[float, ...] | None = None
    """Total throughput of 1, 2, ... active replicas relative to one (starts at 1.0; None:
    linear, every replica has a host of its own)."""
    loading_load: float = 1.0
    """How much of a replica a loading one weighs in ``host_speedup``'s count (0: none)."""
    cold_start_busy_s: float | None = None
    """Start to ready while another replica serves requests (None: ``cold_start_s``)."""

    def __post_init__(self) -> None:
        _check("max_concurrency", self.max_concurrency, low=1)
        _check("first_token_s", self.first_token_s)
        _check("tpot_s", self.tpot_s)
        _check("slowdown", self.slowdown)
        _check("cold_start_s", self.cold_start_s)
        if self.prefill_tokens_per_s is not None:
            _check("prefill_tokens_per_s", self.prefill_tokens_per_s, positive=True)
        _check("loading_load", self.loading_load)
        if self.loading_load > 1:
            raise PoolModelError(f"pool model: loading_load must be <= 1, not {self.loading_load}")
        if self.cold_start_busy_s is not None:
            _check("cold_start_busy_s", self.cold_start_busy_s)
        if self.host_speedup is not None:
            object.__setattr__(self, "host_speedup", check_host_speedup(self.host_speedup))

    def prefill_work_s(self, prompt_tokens: int) -> float:
        prefill = self.prefill_tokens_per_s
        return self.first_token_s + (prompt_tokens / prefill if prefill else 0.0)

    def decode_work_s(self, completion_tokens: int) -> float:
        return max(0, completion_tokens - 1) * self.tpot_s

    def speed(self, concurrent: int) -> float:
        """How fast each of ``concurrent`` requests advances, relative to one alone."""
        return 1.0 / (1.0 + self.slowdown * max(0, concurrent - 1))

    def host_factor(self, active: float) -> float:
        """Each replica's speed with ``active`` replicas on the host, relative to alone."""
        table = self.host_speedup
        if table is None or active <= 1.0:
            return 1.0
        low = int(math.floor(active))
        if low >= len(table):
            total = table[-1]
        else:
            total = table[low - 1] + (table[low] - table[low - 1]) * (active - low)
        return total / active

    def cold_start_for(self, *, busy: bool) -> float:
        """The cold start of a replica started while another serves (``busy``) or not."""
        if busy and self.cold_start_busy_s is not None:
            return self.cold_start_busy_s
        return self.cold_start_s

    def with_options(self, **options: Any) -> PoolModel:
        """This model with the options that were given (None: keep the fitted value)."""
        given = {k: v for k, v in options.items() if v is not None}
        try:
            return replace(self, **given)
        except TypeError as exc:
            raise PoolModelError(str(exc)) from exc

    def as_json(self) -> dict[str, Any]:
        return {
            "max_concurrency": self.max_concurrency,
            "first_token_s": self.first_token_s,
            "tpot_s": self.tpot_s,
            "prefill_tokens_per_s": self.prefill_tokens_per_s,
            "slowdown": self.slowdown,
            "cold_start_s": self.cold_start_s,
            "host_speedup": None if self.host_speedup is None else list(self.host_speedup),
            "loading_load": self.loading_load,
            "cold_start_busy_s": self.cold_start_busy_s,
        }


def check_host_speedup(values: object) -> tuple[float, ...]:
    """``host_speedup`` validated: finite numbers > 0, the first 1.0 (one replica is itself)."""
    if isinstance(values, str) or not isinstance(values, tuple | list) or not values:
        raise PoolModelError(f"pool model: host_speedup must be a list of numbers, not {values!r}")
    out = tuple(_number(v, "pool model: a host_speedup entry") for v in values)
    if any(v <= 0 for v in out):
        raise PoolModelError(f"pool model: host_speedup entries must be > 0, not {list(out)}")
    if out[0] != 1.0:
        raise PoolModelError(f"pool model: host_speedup starts at 1.0 (one replica), not {out[0]}")
    return out


def parse_host_speedup(text: str) -> tuple[float, ...]:
    """``"1,1.41"`` as ``host_speedup``."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError as exc:
        raise PoolModelError(f"host speedup {text!r}: numbers separated by commas") from exc
    return check_host_speedup(values)


def _check(name: str, value: float, *, low: float = 0.0, positive: bool = False) -> None:
    number = float(value)
    if not math.isfinite(number) or number < low or (positive and number <= 0):
        bound = "> 0" if positive else f">= {low:g}"
        raise PoolModelError(f"pool model: {name} must be a finite number {bound}, not {value!r}")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PoolModelError(f"cannot read {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise PoolModelError(f"{path} is not a JSON object")
    return doc


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PoolModelError(f"{where} is not a number: {value!r}")
    return float(value)


def _median_s(target: dict[str, Any], metric: str, where: str) -> float:
    summary = target.get(metric)
    if not isinstance(summary, dict):
        raise PoolModelError(f"{where}: no {metric} summary")
    return _number(summary.get("median"), f"{where} {metric}.median") / 1000.0


@dataclass(frozen=True, slots=True)
class _Point:
    concurrency: int
    ttft_s: float
    tpot_s: float


def _points(doc: dict[str, Any], path: Path, target: str | None) -> list[_Point]:
    if doc.get("tidegate_bench") != 1 or not isinstance(doc.get("runs"), list):
        raise PoolModelError(f"{path} is not a `tidegate bench run` result (tidegate_bench: 1)")
    points = []
    for run in doc["runs"]:
        if not isinstance(run, dict) or not isinstance(run.get("targets"), list):
            raise PoolModelError(f"{path}: a run without targets")
        concurrency = run.get("concurrency")
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            continue  # an open loop: its concurrency is not known
        rows = [t for t in run["targets"] if isinstance(t, dict)]
        if target is not None:
            rows = [t for t in rows if t.get("name") == target]
        elif len(rows) > 1:
            names = ", ".join(str(t.get("name")) for t in rows)
            raise PoolModelError(f"{path} has several targets ({names}): name one")
        for row in rows:
            if not row.get("completed"):
                continue
            where = f"{path} run {run.get('label')!r}"
            points.append(
                _Point(
                    concurrency, _median_s(row, "ttft_ms", where), _median_s(row, "tpot_ms", where)
                )
            )
    if not points:
        which = f" for target {target!r}" if target else ""
        raise PoolModelError(f"{path} has no completed closed-loop run{which} to fit")
    return sorted(points, key=lambda p: p.concurrency)


def from_bench(path: Path, *, max_concurrency: int, target: str | None = None) -> PoolModel:
    """A pool model fitted to a bench run's closed-loop points (cold start left at default)."""
    points = _points(_read_json(path), path, target)
    slowdown, tpot1 = 0.0, points[0].tpot_s
    if len({p.concurrency for p in points}) > 1:
        # Least squares line tpot = a + b × c; alone (c = 1) it is a + b, the slope per extra
        # request relative to that is the slowdown.
        n = len(points)
        mean_c = sum(p.concurrency for p in points) / n
        mean_t = sum(p.tpot_s for p in points) / n
        var = sum((p.concurrency - mean_c) ** 2 for p in points)
        b = sum((p.concurrency - mean_c) * (p.tpot_s - mean_t) for p in points) / var
        a = mean_t - b * mean_c
        if a + b > 0 and b > 0:
            tpot1, slowdown = a + b, b / (a + b)
        else:
            tpot1 = min(p.tpot_s for p in points)
    first = points[0]
    return PoolModel(
        max_concurrency=max_concurrency,
        first_token_s=first.ttft_s / (1.0 + slowdown * (first.concurrency - 1)),
        tpot_s=tpot1,
        slowdown=slowdown,
    )


def cold_start_from_bench(path: Path) -> float:
    """Spawn to healthy, from ``tidegate bench cold-start --out FILE``."""
    doc = _read_json(path)
    if doc.get("tidegate_bench_cold_start") != 1:
        raise PoolModelError(f"{path} is not a `tidegate bench cold-start` result")
    ready = _number(doc.get("ready_s"), f"{path} ready_s")
    if ready < 0:
        raise PoolModelError(f"{path}: ready_s is negative")
    return ready
