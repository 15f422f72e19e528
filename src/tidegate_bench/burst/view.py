"""Console tables of a burst run: per phase, the replicas' scale-up, and the SLA verdict."""

from __future__ import annotations

from typing import Any

from rich.table import Table

_PHASE_COLUMNS = (
    "phase", "seconds", "load", "req", "ok", "fail", "err %", "429", "503", "offered req/s",
    "TTFT p50", "TTFT p95", "E2E p50", "E2E p95", "queue p50", "queue p95",
)  # fmt: skip


def _f(value: Any, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def phases_table(block: dict[str, Any]) -> Table:
    table = Table(title="burst: per phase (latencies in ms)", header_style="bold")
    for col in _PHASE_COLUMNS:
        table.add_column(col, justify="left" if col == "phase" else "right")
    for p in block["phases"]:
        rate = p["error_rate"]
        table.add_row(
            p["name"], f"{p['start_s']:g}-{p['end_s']:g}", f"{p['factor']:g}x",
            str(p["requests"]), str(p["completed"]), str(p["failed"]),
            "-" if rate is None else f"{rate * 100:.1f}", str(p["http_429"]), str(p["http_503"]),
            _f(p["offered_rps"], 2), _f(p["ttft_p50_ms"]), _f(p["ttft_p95_ms"]),
            _f(p["e2el_p50_ms"]), _f(p["e2el_p95_ms"]), _f(p["queue_wait_p50_ms"]),
            _f(p["queue_wait_p95_ms"]),
        )  # fmt: skip
    return table


def scale_up_table(block: dict[str, Any]) -> Table | None:
    if not block["scale_up"]:
        return None
    table = Table(title="burst: replicas (seconds from the burst's start)", header_style="bold")
    for col in ("pool", "ready at burst", "max desired", "max ready", "desired up",
                "one more ready", "new replica's 1st request", "replica"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("pool", "replica") else "right")
    for pool, s in block["scale_up"].items():
        table.add_row(
            pool, _f(s["ready_at_burst_start"]), _f(s["max_desired"]), _f(s["max_ready"]),
            _f(s["to_desired_up_s"], 1), _f(s["to_ready_up_s"], 1),
            _f(s["to_new_replica_first_request_s"], 1), s["new_replica"] or "-",
        )  # fmt: skip
    return table


_STYLE = {"pass": "green", "fail": "red bold", "unknown": "yellow", "unmeasured": "yellow"}


def sla_table(block: dict[str, Any]) -> Table | None:
    sla = block["sla"]
    if sla is None:
        return None
    style = _STYLE[sla["verdict"]]
    table = Table(
        title=f"SLA {sla['spec']}: [{style}]{sla['verdict'].upper()}[/{style}]",
        header_style="bold",
    )
    for col in ("phase", "bound", "limit", "measured", "outcome"):
        table.add_column(col, justify="right" if col in ("limit", "measured") else "left")
    for c in sla["checks"]:
        fraction = c["key"] == "error_rate"
        limit = f"{c['limit']:.4g}" if fraction else f"{c['limit']:,.0f} ms"
        value = c["value"]
        shown = "-" if value is None else (f"{value:.4g}" if fraction else f"{value:,.0f} ms")
        s = _STYLE[c["outcome"]]
        table.add_row(c["phase"], c["key"], limit, shown, f"[{s}]{c['outcome']}[/{s}]")
    return table


def gateway_line(block: dict[str, Any]) -> str | None:
    g = block["gateway"]
    if g["metrics_url"] is None:
        return "gateway metrics: not read (--metrics-url off)"
    if g["error"]:
        return f"[yellow]gateway metrics: none[/yellow] ({g['error']})"
    text = f"gateway metrics: {g['scrapes']} scrapes of {g['metrics_url']}"
    if g["failed_scrapes"]:
        text += f", [yellow]{g['failed_scrapes']} failed[/yellow] ({g['last_scrape_error']})"
    if not block["replicas"]:
        text += "; no autoscaling pool (no tidegate_pool_replicas series)"
    return text
