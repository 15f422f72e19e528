"""Tables for the overhead benchmark's event-loop and streams-sustained parts."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from benchmarks.gateway_stalls import MAX_GC_PAUSE_MS, LoopReport
from benchmarks.stream_capacity import MAX_PAUSE_MS, Capacity

# Issue 16's target: tidegate carries at least this share of what the upstream carries directly.
MIN_PCT_OF_DIRECT_STREAMS = 90.0


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _verdict(ok: bool) -> str:
    return "[green]pass[/]" if ok else "[red]fail[/]"


def render_loops(loops: list[LoopReport], console: Console) -> None:
    if not loops:
        return
    table = Table(title="Each tidegate's event loop over the whole run (its /metrics)")
    for column in ("target", "worst stall ms", "worst full GC ms", "full GCs", "check"):
        table.add_column(column, justify="left" if column == "target" else "right")
    for loop in loops:
        count = "-" if loop.full_collections is None else str(loop.full_collections)
        table.add_row(
            loop.target,
            _ms(loop.worst_stall_ms),
            _ms(loop.worst_gc_pause_ms),
            count,
            _verdict(loop.gc_ok),
        )
    console.print(table)
    console.print(f"Target: no full garbage collection over {MAX_GC_PAUSE_MS:.0f} ms.")


def capacity_ok(capacity: Capacity, direct: int) -> bool | None:
    if capacity.target == "direct" or not direct:
        return None
    return 100 * capacity.sustained / direct >= MIN_PCT_OF_DIRECT_STREAMS


def render_capacity(capacities: list[Capacity], console: Console) -> None:
    if not capacities:
        return
    direct = next((c.sustained for c in capacities if c.target == "direct"), 0)
    table = Table(title="Streams sustained (no frame lost, no stream paused)")
    for column in ("target", "streams", "% of direct", "events/stream", "probes", "check"):
        table.add_column(column, justify="left" if column == "target" else "right")
    for capacity in capacities:
        ok = capacity_ok(capacity, direct)
        pct = "-" if not direct else f"{100 * capacity.sustained / direct:.0f}%"
        table.add_row(
            capacity.target,
            str(capacity.sustained),
            pct,
            str(capacity.expected_events),
            " ".join(f"{p.streams}{'✓' if p.ok else '✗'}" for p in capacity.probes),
            "-" if ok is None else _verdict(ok),
        )
    console.print(table)
    console.print(
        f"Target for tidegate: ≥ {MIN_PCT_OF_DIRECT_STREAMS:.0f}% of direct; a stream fails on "
        f"a lost frame or a gap over {MAX_PAUSE_MS:.0f} ms between two of its events."
    )
