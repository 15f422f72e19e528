"""The bench result file (``tidegate_bench: 1``) as frozen, validated value objects.

The load tester writes the JSON; this module only reads it. Unknown fields are ignored so newer
writers stay readable, and a missing or mistyped field raises ``ResultError`` naming its path,
e.g. ``runs[0].targets[1].ttft_ms.p95``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

SUPPORTED_VERSION = 1


class ResultError(ValueError):
    """The result file is missing, unreadable or not in the documented layout."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Stats(_Frozen):
    """Summary of one latency metric in milliseconds (null when no request produced it)."""

    mean: float | None
    median: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    std: float | None


class Errors(_Frozen):
    http_429: int
    http_5xx: int
    timeout: int
    connect: int
    other: int


class Cost(_Frozen):
    per_request_usd: float | None
    per_good_request_usd: float | None
    per_million_output_tokens_usd: float | None


class TargetResult(_Frozen):
    name: str
    url: str
    model: str
    completed: int
    failed: int
    errors: Errors
    request_throughput: float
    output_throughput: float
    total_token_throughput: float
    goodput: float | None
    total_input_tokens: int
    total_output_tokens: int
    token_mismatches: int
    ttft_ms: Stats
    tpot_ms: Stats
    itl_ms: Stats
    e2el_ms: Stats
    cost: Cost
    timeline: list[tuple[float, float, float]]
    requests_csv: str


class Comparison(_Frozen):
    a: str
    b: str
    metric: str
    median_diff_ms: float
    ci95: tuple[float, float]
    ratio: float | None
    significant: bool


class BurstPhase(_Frozen):
    name: str
    start_s: float
    end_s: float
    factor: float
    requests: int
    completed: int
    failed: int
    error_rate: float | None
    http_429: int
    http_503: int
    offered_rps: float
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    e2el_p50_ms: float | None
    e2el_p95_ms: float | None
    queue_wait_p50_ms: float | None
    queue_wait_p95_ms: float | None


class BurstPoint(_Frozen):
    """One bin of the run: load offered and completed (req/s), and the TTFT p95 of its requests."""

    t_s: float
    offered_rps: float
    completed_rps: float
    ttft_p95_ms: float | None


class ReplicaRow(_Frozen):
    t_s: float
    desired: float | None
    ready: float | None
    starting: float | None = None
    standby: float | None = None


class ScaleUp(_Frozen):
    to_desired_up_s: float | None
    to_ready_up_s: float | None
    to_new_replica_first_request_s: float | None
    new_replica: str | None


class SlaCheck(_Frozen):
    phase: str
    key: str
    limit: float
    value: float | None
    outcome: Literal["pass", "fail", "unmeasured"]


class SlaVerdict(_Frozen):
    spec: str
    checks: list[SlaCheck]
    verdict: Literal["pass", "fail", "unknown"]


class Burst(_Frozen):
    """The ``burst`` block of a ``--scenario burst`` run."""

    phases: list[BurstPhase]
    bin_s: float = 1.0
    """Width of each ``series`` bin, seconds."""
    series: list[BurstPoint]
    replicas: dict[str, list[ReplicaRow]]
    scale_up: dict[str, ScaleUp]
    sla: SlaVerdict | None


class Run(_Frozen):
    label: str
    shape: Literal["closed", "constant", "poisson", "gamma", "onoff", "ramp"]
    concurrency: int | None
    rate: float | None
    duration_s: float
    targets: list[TargetResult]
    comparisons: list[Comparison]
    burst: Burst | None = None


class Client(_Frozen):
    schedule_lag_p99_ms: float
    loop_lag_p99_ms: float
    cpu_percent: float
    client_bound: bool
    advice: str = ""


class Workload(_Frozen):
    model_config = ConfigDict(frozen=True, extra="allow")
    kind: str

    def details(self) -> dict[str, object]:
        """Every field the writer put in, ``kind`` first."""
        return {"kind": self.kind, **(self.model_extra or {})}


class BenchResult(_Frozen):
    tidegate_bench: int
    started_at: str
    command: str
    workload: Workload
    client: Client
    runs: list[Run]


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def parse_result(data: object, *, source: str = "result") -> BenchResult:
    """Validate decoded JSON; the error names the first offending field."""
    if (
        isinstance(data, dict)
        and data.get("tidegate_bench", SUPPORTED_VERSION) != SUPPORTED_VERSION
    ):
        raise ResultError(
            f"{source}: tidegate_bench is {data['tidegate_bench']!r}; "
            f"this version reads {SUPPORTED_VERSION}"
        )
    try:
        return BenchResult.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _path(first["loc"]) or "(top level)"
        if first["type"] == "missing":
            raise ResultError(f"{source}: missing field {where}") from None
        raise ResultError(f"{source}: field {where}: {first['msg']}") from None


def load_result(path: Path) -> BenchResult:
    """Read and validate a result JSON file."""
    try:
        data = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ResultError(f"cannot read {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise ResultError(f"{path} is not JSON: {exc}") from None
    return parse_result(data, source=str(path))
