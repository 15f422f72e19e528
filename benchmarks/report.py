"""Turn raw load-generator results into comparable rows, judge them against the overhead targets,
and render them (a Rich table for people, JSON for machines).

Everything is relative to the direct-to-upstream run of the same scenario, so the figures say
what a hop through a proxy costs on this machine rather than how fast the machine is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

# The targets (issue 16): what tidegate should cost over a bare hop.
MIN_PCT_OF_PASSTHROUGH = 60.0
MAX_ADDED_P50_MS = 0.5
MAX_ADDED_P99_MS = 1.5
MAX_CHUNK_ADDED_P50_MS = 0.01


@dataclass(frozen=True)
class Scenario:
    name: str
    stream: bool
    concurrency: int


@dataclass(frozen=True)
class Check:
    name: str
    limit: float
    value: float | None
    ok: bool


@dataclass
class Row:
    target: str
    scenario: str
    concurrency: int
    requests: int
    errors: int
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    ttft_p50_ms: float | None = None
    chunk_p50_ms: float | None = None
    """Per request, the mean gap between SSE events; the median of those."""
    added_p50_ms: float | None = None
    added_p99_ms: float | None = None
    chunk_added_p50_ms: float | None = None
    pct_of_passthrough: float | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if not self.checks:
            return "-"
        return "pass" if all(c.ok for c in self.checks) else "fail"


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None when there is nothing to rank."""
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


def make_row(target: str, scenario: Scenario, raw: dict[str, Any]) -> Row:
    latencies: list[float] = raw["latencies_ms"]
    elapsed = float(raw["elapsed_s"]) or 1.0
    return Row(
        target=target,
        scenario=scenario.name,
        concurrency=scenario.concurrency,
        requests=int(raw["requests"]),
        errors=int(raw["errors"]),
        rps=raw["requests"] / elapsed,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        ttft_p50_ms=percentile(raw["ttft_ms"], 50) if scenario.stream else None,
        chunk_p50_ms=percentile(raw["chunk_gap_ms"], 50) if scenario.stream else None,
    )


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _at_most(name: str, value: float | None, limit: float) -> Check:
    return Check(name, limit, value, value is not None and value <= limit)


def compare(rows: list[Row], scenarios: list[Scenario]) -> None:
    """Fill in the figures relative to direct (and to passthrough) and the target checks."""
    by_key = {(r.target, r.scenario): r for r in rows}
    for row in rows:
        scenario = next(s for s in scenarios if s.name == row.scenario)
        direct = by_key.get(("direct", row.scenario))
        if direct is None or row.target == "direct":
            continue
        row.added_p50_ms = _minus(row.p50_ms, direct.p50_ms)
        row.added_p99_ms = _minus(row.p99_ms, direct.p99_ms)
        if scenario.stream:
            row.chunk_added_p50_ms = _minus(row.chunk_p50_ms, direct.chunk_p50_ms)
            row.checks.append(
                _at_most("chunk added p50 ms", row.chunk_added_p50_ms, MAX_CHUNK_ADDED_P50_MS)
            )
        elif scenario.concurrency == 1:
            row.checks.append(_at_most("added p50 ms", row.added_p50_ms, MAX_ADDED_P50_MS))
            row.checks.append(_at_most("added p99 ms", row.added_p99_ms, MAX_ADDED_P99_MS))
        passthrough = by_key.get(("passthrough", row.scenario))
        if row.target.startswith("tidegate") and passthrough is not None and passthrough.rps > 0:
            row.pct_of_passthrough = 100 * row.rps / passthrough.rps
            if scenario.concurrency > 1 and not scenario.stream:
                pct = row.pct_of_passthrough
                ok = pct >= MIN_PCT_OF_PASSTHROUGH
                row.checks.append(Check("% of passthrough req/s", MIN_PCT_OF_PASSTHROUGH, pct, ok))


def _ms(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def render(rows: list[Row], console: Console) -> None:
    table = Table(title="Overhead vs direct upstream (loopback)")
    for column in ("target", "scenario", "req/s", "p50 ms", "p99 ms", "+p50 ms", "+p99 ms"):
        table.add_column(column, justify="left" if column in ("target", "scenario") else "right")
    for column in ("chunk ms", "+chunk ms", "% passthru", "errors", "check"):
        table.add_column(column, justify="right")
    for row in rows:
        verdict = {"pass": "[green]pass[/]", "fail": "[red]fail[/]"}.get(row.verdict, "-")
        table.add_row(
            row.target,
            row.scenario,
            f"{row.rps:,.0f}",
            _ms(row.p50_ms),
            _ms(row.p99_ms),
            _ms(row.added_p50_ms, signed=True),
            _ms(row.added_p99_ms, signed=True),
            _ms(row.chunk_p50_ms),
            _ms(row.chunk_added_p50_ms, signed=True),
            "-" if row.pct_of_passthrough is None else f"{row.pct_of_passthrough:.0f}%",
            str(row.errors),
            verdict,
        )
    console.print(table)
    console.print(
        f"Targets for tidegate: c=16 req/s ≥ {MIN_PCT_OF_PASSTHROUGH:.0f}% of passthrough; "
        f"c=1 added ≤ {MAX_ADDED_P50_MS} ms p50 and ≤ {MAX_ADDED_P99_MS} ms p99; "
        f"streaming added ≤ {MAX_CHUNK_ADDED_P50_MS} ms per chunk at p50. "
        "Passthrough rows are judged on latency too, to show what a bare hop costs."
    )


def to_json(rows: list[Row]) -> list[dict[str, Any]]:
    return [{**asdict(row), "verdict": row.verdict} for row in rows]
