"""PNG plots of a bench result, drawn with matplotlib's Agg canvas (no pyplot, no display).

Each function returns a ``Plot`` holding the encoded PNG, or ``None`` when the result has nothing
to draw. Every figure has the same pixel size, and a target keeps its colour across figures.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tidegate_bench.reporting.model import BenchResult, Run, Stats
from tidegate_bench.reporting.samples import Latencies

FIG_SIZE_IN = (10.0, 4.2)
DPI = 100
FIG_SIZE_PX = (int(FIG_SIZE_IN[0] * DPI), int(FIG_SIZE_IN[1] * DPI))
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
MAX_LABEL = 40
METRICS = (("ttft_ms", "TTFT"), ("e2el_ms", "E2E latency"))


@dataclass(frozen=True)
class Plot:
    file: str
    title: str
    png: bytes


def target_colors(result: BenchResult) -> dict[str, str]:
    """A fixed colour per target name, in order of first appearance."""
    names = dict.fromkeys(t.name for run in result.runs for t in run.targets)
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def _label(name: str) -> str:
    return name if len(name) <= MAX_LABEL else name[: MAX_LABEL - 1] + "…"


@contextmanager
def _figure(ncols: int, nrows: int = 1) -> Iterator[tuple[Figure, list[Axes]]]:
    """Axes side by side, or (``nrows`` > 1, one column) stacked on one shared time axis."""
    # Target names are user input: never let a "$" in one switch matplotlib into mathtext.
    with matplotlib.rc_context(
        {"text.parse_math": False, "font.family": "DejaVu Sans", "font.size": 9.0}
    ):
        fig = Figure(figsize=FIG_SIZE_IN, dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        if nrows > 1:
            first = fig.add_subplot(nrows, 1, 1)
            axes = [
                first,
                *(fig.add_subplot(nrows, 1, i + 1, sharex=first) for i in range(1, nrows)),
            ]
        else:
            axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
        for ax in axes:
            ax.grid(True, alpha=0.3)
        yield fig, axes


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _load_axis(runs: Sequence[Run]) -> tuple[str, list[float], list[str] | None]:
    """The x axis for per-run figures: concurrency, else rate, else the run's position."""
    if all(r.concurrency is not None for r in runs):
        return "concurrency", [float(r.concurrency or 0) for r in runs], None
    if all(r.rate is not None for r in runs):
        return "request rate (req/s)", [float(r.rate or 0.0) for r in runs], None
    return "run", [float(i) for i in range(len(runs))], [r.label for r in runs]


def latency_vs_load(result: BenchResult) -> Plot | None:
    """p50 (solid) and p95 (dashed) TTFT and E2E latency per target against the load."""
    if not result.runs:
        return None
    xlabel, xs, ticks = _load_axis(result.runs)
    colors = target_colors(result)
    with _figure(2) as (fig, axes):
        for ax, (metric, title) in zip(axes, METRICS, strict=True):
            for name, color in colors.items():
                points: list[tuple[float, Stats]] = [
                    (x, getattr(t, metric))
                    for x, run in zip(xs, result.runs, strict=True)
                    for t in run.targets
                    if t.name == name
                ]
                points.sort(key=lambda p: p[0])
                for stat, style in (("median", "-"), ("p95", "--")):
                    kept = [(x, v) for x, s in points if (v := getattr(s, stat)) is not None]
                    if kept:
                        label = f"{_label(name)} {'p50' if stat == 'median' else 'p95'}"
                        x_values, y_values = zip(*kept, strict=True)
                        ax.plot(x_values, y_values, style, marker="o", color=color, label=label)
            ax.set_title(f"{title} vs {xlabel}")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("ms")
            ax.set_ylim(bottom=0)
            positive = [x for x in xs if x > 0]
            if ticks is None and len(positive) == len(xs) and max(xs) >= 10 * min(positive):
                ax.set_xscale("log")
            ax.set_xticks(xs, ticks if ticks is not None else [f"{x:g}" for x in xs])
            ax.minorticks_off()
        axes[0].legend(fontsize=8)
        return Plot("latency_vs_load.png", f"Latency vs {xlabel}", _png(fig))


def latency_cdfs(
    run: Run, index: int, latencies: Mapping[str, Latencies], colors: Mapping[str, str]
) -> Plot | None:
    """Empirical CDFs of successful requests' TTFT and E2E latency, one line per target."""
    if not any(lat.ttft_ms or lat.e2el_ms for lat in latencies.values()):
        return None
    with _figure(2) as (fig, axes):
        for ax, (metric, title) in zip(axes, METRICS, strict=True):
            for name, lat in latencies.items():
                values: tuple[float, ...] = getattr(lat, metric)
                if values:
                    fractions = [i / len(values) for i in range(len(values) + 1)]
                    ax.plot(
                        (values[0], *values),
                        fractions,
                        drawstyle="steps-post",
                        color=colors.get(name, PALETTE[0]),
                        label=f"{_label(name)} (n={len(values)})",
                    )
            ax.set_title(f"{title} CDF, {_label(run.label)}")
            ax.set_xlabel("ms")
            ax.set_ylabel("fraction of requests")
            ax.set_ylim(0, 1.02)
            ax.set_xlim(left=0)
        axes[0].legend(fontsize=8, loc="lower right")
        return Plot(f"cdf_run{index + 1}.png", f"TTFT and E2E CDFs, {run.label}", _png(fig))


def throughput_over_time(run: Run, index: int, colors: Mapping[str, str]) -> Plot | None:
    """Completed requests and output tokens per second over the run, one line per target."""
    if not any(t.timeline for t in run.targets):
        return None
    with _figure(2) as (fig, axes):
        for target in run.targets:
            if not target.timeline:
                continue
            ts, done, tokens = zip(*sorted(target.timeline), strict=True)
            color = colors.get(target.name, PALETTE[0])
            axes[0].plot(ts, done, color=color, label=_label(target.name))
            axes[1].plot(ts, tokens, color=color, label=_label(target.name))
        for ax, ylabel in zip(axes, ("requests completed / s", "output tokens / s"), strict=True):
            ax.set_title(f"{ylabel}, {_label(run.label)}")
            ax.set_xlabel("time since start (s)")
            ax.set_ylabel(ylabel)
            ax.set_ylim(bottom=0)
        axes[0].legend(fontsize=8)
        return Plot(
            f"throughput_run{index + 1}.png", f"Throughput over time, {run.label}", _png(fig)
        )


def burst_timeline(run: Run, index: int) -> Plot | None:
    """A burst run on one time axis: load (req/s offered and completed), replicas (desired and
    ready, per pool) and TTFT p95; the burst phase shaded, the SLA's TTFT p95 bound dashed."""
    burst = run.burst
    if burst is None or not burst.series:
        return None
    with _figure(1, nrows=3) as (fig, axes):
        load, replicas, ttft = axes
        width = burst.bin_s
        # Each bin drawn over its whole width: the last one is repeated at the run's end.
        ts = [p.t_s for p in burst.series] + [burst.series[-1].t_s + width]
        for key, color, label in (("offered_rps", PALETTE[0], "offered"),
                                  ("completed_rps", PALETTE[1], "completed")):  # fmt: skip
            values = [getattr(p, key) for p in burst.series]
            load.step(ts, [*values, values[-1]], where="post", color=color, label=label)
        load.set_ylabel("req/s")
        for i, (pool, rows) in enumerate(sorted(burst.replicas.items())):
            rt = [r.t_s for r in rows]
            name = f"{_label(pool)} " if len(burst.replicas) > 1 else ""
            desired, ready = (PALETTE[(k + 2 * i) % len(PALETTE)] for k in (2, 3))
            replicas.step(rt, [r.desired or 0.0 for r in rows], where="post", linestyle="--",
                          color=desired, label=f"{name}desired")  # fmt: skip
            replicas.step(rt, [r.ready or 0.0 for r in rows], where="post", color=ready,
                          label=f"{name}ready")  # fmt: skip
        if not burst.replicas:
            replicas.text(0.5, 0.5, "no autoscaling pool in the gateway's metrics",
                          transform=replicas.transAxes, ha="center", va="center")  # fmt: skip
        replicas.set_ylabel("replicas")
        kept = [(p.t_s + width / 2, p.ttft_p95_ms) for p in burst.series if p.ttft_p95_ms]
        if kept:
            xs, ys = zip(*kept, strict=True)
            ttft.plot(xs, ys, marker=".", color=PALETTE[4], label="TTFT p95")
        bound = next(
            (c.limit for c in (burst.sla.checks if burst.sla else ()) if c.key == "ttft_p95"), None
        )
        if bound is not None:
            ttft.axhline(bound, linestyle="--", color=PALETTE[3], label="SLA ttft_p95")
        ttft.set_ylabel("TTFT p95 (ms)")
        ttft.set_xlabel("time since start (s)")
        for ax in axes:
            for phase in burst.phases:
                if phase.name == "burst":
                    ax.axvspan(phase.start_s, phase.end_s, color="#d62728", alpha=0.08)
            ax.set_ylim(bottom=0)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="upper right")
        for ax in (load, replicas):
            ax.tick_params(labelbottom=False)
        if burst.phases:
            load.set_xlim(0, burst.phases[-1].end_s)
        load.set_title(f"Burst: load, replicas and TTFT p95, {_label(run.label)} (burst shaded)")
        return Plot(f"burst_run{index + 1}.png", f"Burst timeline, {run.label}", _png(fig))
