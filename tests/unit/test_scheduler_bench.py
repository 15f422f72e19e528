"""The priority benchmark's summary and table (the run itself needs the real engine)."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from benchmarks.priority import (
    Options,
    PhaseResult,
    _longest_pause,
    _parse_args,
    _summary,
    render,
)


def phase(name: str, p95: float, batch: float, interactive: float = 16.0) -> PhaseResult:
    return PhaseResult(
        name=name,
        target="http://x/v1",
        interactive_sent=10,
        interactive_ok=10,
        ttft_p50_s=p95 / 2,
        ttft_p95_s=p95,
        ttft_max_s=p95,
        batch_tokens_per_s=batch,
        interactive_tokens_per_s=interactive,
    )


def test_summary_checks_both_targets_and_renders() -> None:
    phases = [phase("idle", 0.1, 0.0), phase("vllm", 15.0, 380.0), phase("tidegate", 0.14, 350.0)]
    summary = _summary(phases, Options())
    checks = summary["checks"]
    assert checks["interactive_ttft_p95_vs_idle"]["pass"] is True
    assert abs(checks["batch_throughput_vs_vllm"]["share"] - 350 / 380) < 1e-9
    assert checks["batch_throughput_vs_vllm"]["pass"] is True
    out = io.StringIO()
    render(summary, Console(file=out, width=160))
    assert "through tidegate" in out.getvalue() and "pass" in out.getvalue()
    assert "0 of 0 interactive requests took over 1.5x the idle p95" in out.getvalue()
    failing = _summary([phases[0], phases[1], phase("tidegate", 0.5, 200.0)], Options())
    assert not failing["checks"]["interactive_ttft_p95_vs_idle"]["pass"]
    assert not failing["checks"]["batch_throughput_vs_vllm"]["pass"]


def test_options_from_the_command_line() -> None:
    options = _parse_args(["--duration", "5", "--interactive-reserve", "0.25", "--out", "x.json"])
    assert options.duration_s == 5 and options.interactive_reserve == 0.25
    assert options.out == Path("x.json")


def test_slow_interactive_requests_are_listed_with_the_batch_pause_beside_them() -> None:
    through = phase("tidegate", 0.5, 200.0)
    through.ttfts_s, through.batch_stalls_s = [0.12, 0.4, 0.16], [0.05, 0.31, 0.02]
    summary = _summary([phase("idle", 0.1, 0.0), phase("vllm", 15.0, 380.0), through], Options())
    out = io.StringIO()
    render(summary, Console(file=out, width=200))
    assert "2 of 3 interactive requests took over 1.5x the idle p95" in out.getvalue()
    assert "0.40 s / 0.31 s" in out.getvalue()


def test_longest_pause_counts_the_window_edges() -> None:
    assert _longest_pause([1.0, 1.1, 1.5, 3.0], 1.05, 2.0) == 0.5
    assert _longest_pause([], 1.0, 1.25) == 0.25
