"""``--sla ttft_p95=2s,error_rate=0.01``: bounds every phase of a burst run must meet.

Parsed strictly before anything is sent: an unknown key, a repeated key, a latency without a unit
or a rate outside [0, 1] is a usage error naming the offending part. Latencies take ``ms`` or
``s``; ``error_rate`` is a fraction (``0.01``) or a percentage (``1%``).

Each phase gets one check per bound: ``pass``, ``fail``, or ``unmeasured`` (no request of the
phase produced the figure, or the gateway's queue-wait histogram could not be read). The run's
verdict is ``fail`` if any check failed, else ``unknown`` if any was unmeasured, else ``pass``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

Outcome = Literal["pass", "fail", "unmeasured"]
Verdict = Literal["pass", "fail", "unknown"]

# SLA key -> (the per-phase figure it bounds, its kind). Latency figures are in milliseconds.
SLA_KEYS: dict[str, tuple[str, Literal["latency", "fraction"]]] = {
    "ttft_p50": ("ttft_p50_ms", "latency"),
    "ttft_p95": ("ttft_p95_ms", "latency"),
    "ttft_p99": ("ttft_p99_ms", "latency"),
    "e2e_p50": ("e2el_p50_ms", "latency"),
    "e2e_p95": ("e2el_p95_ms", "latency"),
    "e2e_p99": ("e2el_p99_ms", "latency"),
    "queue_wait_p95": ("queue_wait_p95_ms", "latency"),
    "error_rate": ("error_rate", "fraction"),
}
_LATENCY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s)$")
_FRACTION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(%?)$")


@dataclass(frozen=True)
class Bound:
    key: str
    """As written on the command line: ``ttft_p95``."""
    limit: float
    """Milliseconds for latencies, a fraction for rates."""
    text: str
    """The value as written: ``2s``."""

    @property
    def figure(self) -> str:
        return SLA_KEYS[self.key][0]


@dataclass(frozen=True)
class Sla:
    bounds: tuple[Bound, ...]

    @property
    def spec(self) -> str:
        return ",".join(f"{b.key}={b.text}" for b in self.bounds)


def parse_sla(text: str) -> Sla:
    """``key=value[,key=value...]``; raises ValueError with a message fit for the user."""
    bounds: list[Bound] = []
    parts = [p.strip() for p in text.split(",")]
    if not text.strip():
        raise ValueError("--sla is empty; give key=value pairs such as ttft_p95=2s,error_rate=0.01")
    for part in parts:
        key, sep, value = (s.strip() for s in part.partition("="))
        if not part or not sep or not key or not value:
            raise ValueError(f"--sla part {part!r} is not key=value (e.g. ttft_p95=2s)")
        if key not in SLA_KEYS:
            raise ValueError(f"--sla key {key!r} is unknown; known: {', '.join(SLA_KEYS)}")
        if any(b.key == key for b in bounds):
            raise ValueError(f"--sla key {key!r} is given twice")
        kind = SLA_KEYS[key][1]
        bounds.append(
            Bound(
                key, _latency_ms(key, value) if kind == "latency" else _fraction(key, value), value
            )
        )
    return Sla(tuple(bounds))


def _latency_ms(key: str, value: str) -> float:
    match = _LATENCY.match(value)
    if match is None:
        raise ValueError(
            f"--sla {key}={value}: a latency is a number with a unit, ms or s (e.g. 2s, 500ms)"
        )
    number = float(match.group(1))
    ms = number * 1000.0 if match.group(2) == "s" else number
    if not (math.isfinite(ms) and ms > 0):
        raise ValueError(f"--sla {key}={value}: the latency must be positive")
    return ms


def _fraction(key: str, value: str) -> float:
    match = _FRACTION.match(value)
    if match is None:
        raise ValueError(f"--sla {key}={value}: a rate is a fraction (0.01) or a percentage (1%)")
    number = float(match.group(1)) / (100.0 if match.group(2) else 1.0)
    if not (math.isfinite(number) and 0 <= number <= 1):
        raise ValueError(f"--sla {key}={value}: a rate must lie between 0 and 1 (0% and 100%)")
    return number


@dataclass(frozen=True)
class Check:
    phase: str
    key: str
    limit: float
    value: float | None
    outcome: Outcome

    def as_json(self) -> dict[str, object]:
        return {
            "phase": self.phase, "key": self.key, "limit": self.limit, "value": self.value,
            "outcome": self.outcome,
        }  # fmt: skip


def check_phases(sla: Sla, figures: Mapping[str, Mapping[str, float | None]]) -> list[Check]:
    """One check per phase (``figures``: phase -> figure name -> value) and bound."""
    checks = []
    for phase, values in figures.items():
        for bound in sla.bounds:
            value = values.get(bound.figure)
            if value is None:
                outcome: Outcome = "unmeasured"
            else:
                outcome = "pass" if value <= bound.limit else "fail"
            checks.append(Check(phase, bound.key, bound.limit, value, outcome))
    return checks


def verdict(checks: Sequence[Check]) -> Verdict:
    outcomes = {c.outcome for c in checks}
    if "fail" in outcomes:
        return "fail"
    return "unknown" if "unmeasured" in outcomes or not checks else "pass"
