"""Console output: the results table of a run and the differences between two runs."""

from __future__ import annotations

from typing import Any

from rich.table import Table

_DIFF_METRICS = (
    ("request_throughput", None, "req/s"),
    ("output_throughput", None, "tok/s"),
    ("goodput", None, "good req/s"),
    ("ttft_ms", "median", "TTFT p50 ms"),
    ("ttft_ms", "p99", "TTFT p99 ms"),
    ("tpot_ms", "median", "TPOT p50 ms"),
    ("itl_ms", "p99", "ITL p99 ms"),
    ("e2el_ms", "median", "E2E p50 ms"),
    ("e2el_ms", "p99", "E2E p99 ms"),
)


_COLUMNS = (
    "load", "target", "ok", "fail", "429", "req/s", "out tok/s", "goodput",
    "TTFT p50", "TTFT p99", "TPOT p50", "ITL p99", "E2E p50", "E2E p99", "$/req",
)  # fmt: skip


def _f(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def results_table(document: dict[str, Any]) -> Table:
    table = Table(title="tidegate bench", header_style="bold")
    for col in _COLUMNS:
        table.add_column(col, justify="left" if col in ("load", "target") else "right")
    for run in document["runs"]:
        for t in run["targets"]:
            per_req = t["cost"]["per_request_usd"]
            table.add_row(
                run["label"], t["name"], str(t["completed"]), str(t["failed"]),
                str(t["errors"]["http_429"]), _f(t["request_throughput"], 2),
                _f(t["output_throughput"]), _f(t["goodput"], 2),
                _f(t["ttft_ms"]["median"]), _f(t["ttft_ms"]["p99"]), _f(t["tpot_ms"]["median"]),
                _f(t["itl_ms"]["p99"]), _f(t["e2el_ms"]["median"]), _f(t["e2el_ms"]["p99"]),
                "-" if per_req is None else f"{per_req:.6f}",
            )  # fmt: skip
    return table


def comparisons_table(document: dict[str, Any]) -> Table | None:
    rows = [(run["label"], c) for run in document["runs"] for c in run["comparisons"]]
    if not rows:
        return None
    table = Table(title="paired differences (b - a, bootstrap 95% CI)", header_style="bold")
    for col in ("load", "a", "b", "metric", "median diff ms", "95% CI", "ratio b/a", "verdict"):
        table.add_column(col)
    for label, c in rows:
        lo, hi = c["ci95"]
        verdict = "[bold]different[/bold]" if c["significant"] else "no clear difference"
        table.add_row(
            label, c["a"], c["b"], c["metric"], _f(c["median_diff_ms"], 2),
            f"[{lo:,.2f}, {hi:,.2f}]", _f(c["ratio"], 3), verdict,
        )  # fmt: skip
    return table


def client_line(document: dict[str, Any]) -> str:
    c = document["client"]
    text = (
        f"client: schedule lag p99 {c['schedule_lag_p99_ms']:.2f} ms, loop lag p99 "
        f"{c['loop_lag_p99_ms']:.2f} ms, CPU {c['cpu_percent']:.0f}%"
    )
    advice = c.get("advice", "")
    if c["client_bound"]:
        text += (
            " — [red bold]CLIENT-BOUND[/red bold]: the load generator saturated its core, so the "
            f"latencies include its own delay; {advice}"
        )
    elif advice:
        text += f" — note: {advice}"
    return text


def diff_rows(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """(load, target, metric, A, B, change) for runs and targets present in both."""
    rows = []
    b_runs = {run["label"]: run for run in b["runs"]}
    for run in a["runs"]:
        other = b_runs.get(run["label"])
        if other is None:
            continue
        b_targets = {t["name"]: t for t in other["targets"]}
        for t in run["targets"]:
            u = b_targets.get(t["name"])
            if u is None:
                continue
            for key, stat, name in _DIFF_METRICS:
                va = t[key][stat] if stat else t[key]
                vb = u[key][stat] if stat else u[key]
                change = "-"
                if va is not None and vb is not None and va:
                    change = f"{(vb - va) / va * 100:+.1f}%"
                rows.append((run["label"], t["name"], name, _f(va, 2), _f(vb, 2), change))
    return rows


def diff_table(a: dict[str, Any], b: dict[str, Any], *, names: tuple[str, str]) -> Table:
    table = Table(title=f"{names[0]} → {names[1]}", header_style="bold")
    for col in ("load", "target", "metric", "A", "B", "change"):
        table.add_column(col, justify="right" if col in ("A", "B", "change") else "left")
    for row in diff_rows(a, b):
        table.add_row(*row)
    return table
