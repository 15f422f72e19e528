"""A rollout step's gates: does the candidate pool hold up against the stable one? Pure.

Each gate compares the two pools' figures of the step (see ``rollout.stats``):

==================== ======================================================== ========
gate                 fails when                                               default
==================== ======================================================== ========
error_rate_delta     candidate error rate − stable error rate  >  the value   0.02
ttft_p95_ratio       candidate TTFT p95 / stable TTFT p95      >  the value   1.5
itl_p95_ratio        candidate ITL p95 / stable ITL p95        >  the value   1.5
json_validity_delta  stable JSON validity − candidate validity >  the value   0.05
==================== ======================================================== ========

Nothing is judged before each side has ``min_samples`` requests (default 20): until then the
verdict is ``insufficient``. A latency gate with no latencies on a side, and the JSON gate
while either side has fewer than ``min_samples`` JSON-mode requests, are skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from tidegate.errors import InvalidRequestError
from tidegate.rollout.stats import PoolTotals

GateVerdict = Literal["pass", "fail", "insufficient"]
Figures = dict[str, float | int | None]


@dataclass(frozen=True, slots=True)
class Gates:
    error_rate_delta: float = 0.02
    ttft_p95_ratio: float = 1.5
    itl_p95_ratio: float = 1.5
    json_validity_delta: float = 0.05
    min_samples: int = 20

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> Gates:
        """Defaults overridden by ``data``; InvalidRequestError names a bad or unknown gate."""
        known = {item.name for item in fields(cls)}
        values: dict[str, Any] = {}
        for name, value in (data or {}).items():
            if name not in known:
                raise InvalidRequestError(
                    f"Unknown gate '{name}'. Gates: {', '.join(sorted(known))}.",
                    param=f"gates.{name}",
                )
            values[name] = _checked(name, value)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _checked(name: str, value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequestError(f"Gate '{name}' must be a number.", param=f"gates.{name}")
    if name == "min_samples":
        if not isinstance(value, int) and not float(value).is_integer() or value < 1:
            raise InvalidRequestError(
                "Gate 'min_samples' must be a whole number of at least 1.",
                param="gates.min_samples",
            )
        return int(value)
    if value < 0 or (name.endswith("_ratio") and value < 1):
        least = "1" if name.endswith("_ratio") else "0"
        raise InvalidRequestError(
            f"Gate '{name}' must be at least {least} (got {value}).", param=f"gates.{name}"
        )
    return float(value)


@dataclass(frozen=True, slots=True)
class GateResult:
    verdict: GateVerdict
    gate: str | None = None
    """The failed gate."""
    reason: str = ""
    """What was found, for people (the rollback reason, the status line)."""
    figures: Figures = field(default_factory=dict)
    """Both sides' figures and the compared values (see :func:`step_figures`)."""


def side_figures(totals: PoolTotals) -> Figures:
    """One pool's figures as reports and the API show them (latencies in seconds)."""
    return {
        "requests": totals.requests,
        "errors": totals.errors,
        "error_rate": totals.error_rate,
        "ttft_p50_s": totals.p("ttft", 0.5),
        "ttft_p95_s": totals.p("ttft", 0.95),
        "itl_p95_s": totals.p("itl", 0.95),
        "e2e_p95_s": totals.p("e2e", 0.95),
        "json_requests": totals.json_requests,
        "json_validity": totals.json_validity,
    }


def step_figures(stable: PoolTotals, candidate: PoolTotals) -> Figures:
    """Both sides (``stable_*``, ``candidate_*``) and the values the gates compare."""
    figures: Figures = {}
    for side, totals in (("stable", stable), ("candidate", candidate)):
        figures.update({f"{side}_{name}": value for name, value in side_figures(totals).items()})
    figures["error_rate_delta"] = _delta(candidate.error_rate, stable.error_rate)
    figures["ttft_p95_ratio"] = _ratio(candidate.p("ttft", 0.95), stable.p("ttft", 0.95))
    figures["itl_p95_ratio"] = _ratio(candidate.p("itl", 0.95), stable.p("itl", 0.95))
    figures["json_validity_delta"] = _delta(stable.json_validity, candidate.json_validity)
    return figures


def evaluate(gates: Gates, stable: PoolTotals, candidate: PoolTotals) -> GateResult:
    figures = step_figures(stable, candidate)
    if stable.requests < gates.min_samples or candidate.requests < gates.min_samples:
        return GateResult(
            "insufficient",
            reason=(
                f"waiting for {gates.min_samples} requests per pool (stable "
                f"{stable.requests}, candidate {candidate.requests})"
            ),
            figures=figures,
        )
    json_judged = min(stable.json_requests, candidate.json_requests) >= gates.min_samples
    checks: list[tuple[str, float | None, float]] = [
        ("error_rate_delta", figures["error_rate_delta"], gates.error_rate_delta),
        ("ttft_p95_ratio", figures["ttft_p95_ratio"], gates.ttft_p95_ratio),
        ("itl_p95_ratio", figures["itl_p95_ratio"], gates.itl_p95_ratio),
        (
            "json_validity_delta",
            figures["json_validity_delta"] if json_judged else None,
            gates.json_validity_delta,
        ),
    ]
    for gate, value, limit in checks:
        if value is not None and value > limit:
            return GateResult(
                "fail",
                gate=gate,
                reason=f"{gate} {value:.3f} > {limit:g} ({_sides(gate, figures)})",
                figures=figures,
            )
    return GateResult("pass", reason="all gates hold", figures=figures)


_SHOWN = {
    "error_rate_delta": ("error_rate", "error rate"),
    "ttft_p95_ratio": ("ttft_p95_s", "TTFT p95"),
    "itl_p95_ratio": ("itl_p95_s", "ITL p95"),
    "json_validity_delta": ("json_validity", "JSON validity"),
}


def _sides(gate: str, figures: Figures) -> str:
    key, label = _SHOWN[gate]
    stable, candidate = figures[f"stable_{key}"], figures[f"candidate_{key}"]
    unit = " s" if key.endswith("_s") else ""
    return f"{label}: stable {_num(stable)}{unit}, candidate {_num(candidate)}{unit}"


def _num(value: float | int | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return a / b if b > 0 else None  # no finite ratio (and JSON has no infinity)
