"""The console tables of ``make bench-abuse``: one row per abusive input class with its verdict
against the targets, the notes under it, and the budget race."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

REFUSAL_TARGET_MS = 100.0
HEALTHZ_TARGET_MS = 50.0


def render(report: dict[str, Any], console: Console) -> None:
    single = report["single_gateway"]
    idle = single["healthz_idle_ms"]
    table = Table(
        title=f"Abusive inputs, one gateway (/healthz idle: p50 {idle['p50']} ms, "
        f"p99 {idle['p99']} ms, max {idle['max']} ms)"
    )
    table.add_column("input")
    table.add_column("MB", justify="right")
    for column in ("sent", "answers"):
        table.add_column(column)
    for column in (
        "p50 ms",
        "p99 ms",
        "max ms",
        "healthz p50",
        "healthz p99",
        "healthz max",
        "RSS after MB",
        "verdict",
    ):
        table.add_column(column, justify="right")
    for entry in single["classes"]:
        latency, healthz = entry["latency_ms"], entry["healthz_ms"]
        answers = ", ".join(f"{k}×{v}" for k, v in entry["statuses"].items())
        table.add_row(
            entry["description"],
            f"{entry['body_mb']:,.1f}",
            str(entry["sent"]),
            answers,
            _f(latency["p50"]),
            _f(latency["p99"]),
            _f(latency["max"]),
            _f(healthz["p50"]),
            _f(healthz["p99"]),
            _f(healthz["max"]),
            f"{entry['memory_after']['rss_mb']:,.0f}",
            verdict(entry),
        )
    console.print(table)
    before, after = single["memory_before"], single["memory_after"]
    console.print(
        f"gateway RSS {before['rss_mb']:,.0f} MB before, {after['rss_mb']:,.0f} MB after, "
        f"peak {after['peak_rss_mb']:,.0f} MB",
        markup=False,
    )
    for entry in single["classes"]:
        for answer, times in entry["answers"].items():
            console.print(f"  {entry['name']}: {answer} ×{times}", markup=False)
        if "batch_from_it" in entry:
            console.print(
                f"  {entry['name']}: upload accepted; the batch from it: "
                f"{_batch_outcome(entry['batch_from_it'])}",
                markup=False,
            )
        for step in ("validating", "cancelling"):
            if f"healthz_while_{step}_ms" in entry:
                figures = entry[f"healthz_while_{step}_ms"]
                console.print(
                    f"  {entry['name']}: /healthz while the batches were {step}: p50 "
                    f"{figures['p50']} ms, p99 {figures['p99']} ms, max {figures['max']} ms",
                    markup=False,
                )
        if "validation_s_max" in entry:
            console.print(
                f"  {entry['name']}: validated in ≤ {entry['validation_s_max']} s", markup=False
            )
    if "budget_race" in report:
        render_race(report["budget_race"], console)
    if "budget_race_skipped" in report:
        console.print(f"budget race skipped: {report['budget_race_skipped']}", markup=False)


def _batch_outcome(run: dict[str, Any]) -> str:
    errors = "; ".join(f"line {e.get('line')}: {e.get('message')}" for e in run["errors"])
    return f"{run['status_after_validation']} after {run['validation_s']} s" + (
        f" ({errors})" if errors else ""
    )


def verdict(entry: dict[str, Any]) -> str:
    """ "ok", or what missed a target (the 50,000-line batch is accepted by design)."""
    problems = []
    refused_later = entry.get("refused_at_validation", False)
    if entry["name"] != "batch-50k-lines" and not entry["refused"] and not refused_later:
        problems.append("NOT REFUSED")
    p99 = entry["latency_ms"]["p99"]
    if p99 is not None and p99 >= REFUSAL_TARGET_MS:
        problems.append("SLOW")
    healthz_max = entry["healthz_ms"]["max"]
    if healthz_max is not None and healthz_max > HEALTHZ_TARGET_MS:
        problems.append("HEALTHZ")
    return " ".join(problems) or ("ok (batch fails)" if refused_later else "ok")


def render_race(race: dict[str, Any], console: Console) -> None:
    table = Table(
        title=f"Budget race: {race['requests']} concurrent requests, {race['gateways']} gateways, "
        "PostgreSQL + Redis, fake upstream without tokenizer or context length"
    )
    table.add_column("variant")
    for column in ("200", "429", "other", "admitted tokens", "bound", "used", "overspend", "s"):
        table.add_column(column, justify="right")
    for v in race["variants"]:
        statuses = dict(v["statuses"])
        ok, refused = statuses.pop("200", 0), statuses.pop("429", 0)
        table.add_row(
            v["variant"],
            str(ok),
            str(refused),
            str(sum(statuses.values())),
            f"{v['admitted_tokens']:,}",
            f"{v['bound_tokens']:,.0f}",
            f"{v['used_pct']:.0f}%",
            f"{v['overspend_pct']:.1f}%",
            f"{v['elapsed_s']:.2f}",
        )
    console.print(table)


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"
