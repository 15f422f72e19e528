"""The simulator's command-line inputs: ``--policy`` (a YAML file or ``fixed:N``) and ``--sla``.

A policy file holds the ``AutoscalingPolicy`` block, bare or under an ``autoscaling:`` key, so
the block copied from a config (``engines.autoscaling``) or Helm values
(``engines.pools.<pool>.autoscaling``) works as it is. ``NAME=FILE`` names the column (default:
the file's stem).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tidegate.config import AutoscalingPolicy
from tidegate.plan.errors import PlanInputError
from tidegate.plan.simulate import PolicySpec

_FIXED = re.compile(r"fixed:(\d+)")
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s)?")
_SLA_TIMES = ("ttft_p50", "ttft_p95", "ttft_p99", "queue_wait_p95", "e2e_p95")
_MAX_FIXED = 10_000


class SimulationInputError(PlanInputError):
    """A ``--policy`` or ``--sla`` that cannot be used."""


def parse_policy(text: str) -> PolicySpec:
    """``fixed:N``, ``FILE.yaml`` or ``NAME=FILE.yaml``."""
    if match := _FIXED.fullmatch(text.strip()):
        count = int(match.group(1))
        if not 1 <= count <= _MAX_FIXED:
            raise SimulationInputError(
                f"--policy {text}: a fixed pool has 1..{_MAX_FIXED} replicas"
            )
        return PolicySpec.fixed_pool(count)
    if text.startswith("fixed:"):
        raise SimulationInputError(f"--policy {text}: write fixed:N with a whole number N >= 1")
    name, _, file = text.rpartition("=")
    path = Path(file)
    if name and not re.fullmatch(r"[\w.:+-]{1,40}", name):
        raise SimulationInputError(f"--policy {text}: the name must be 1-40 letters, digits, ._:+-")
    return PolicySpec(name or path.stem, policy=load_policy(path))


def load_policy(path: Path) -> AutoscalingPolicy:
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SimulationInputError(f"cannot read policy {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise SimulationInputError(f"policy {path} is not YAML: {exc}") from exc
    if isinstance(data, dict) and set(data) == {"autoscaling"}:
        data = data["autoscaling"]
    if not isinstance(data, dict):
        raise SimulationInputError(
            f"policy {path} must hold the autoscaling block (a mapping: min_replicas, "
            "max_replicas, signal, target, ...)"
        )
    try:
        return AutoscalingPolicy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'policy'}: {e['msg']}" for e in exc.errors()
        )
        raise SimulationInputError(f"policy {path}: {problems}") from exc


@dataclass(frozen=True, kw_only=True)
class Sla:
    """Targets a simulated run is judged by. Times in seconds; error_rate a fraction."""

    times: dict[str, float]
    """``ttft_p95`` → 2.0 and the like (keys from ``_SLA_TIMES``)."""
    error_rate: float | None = None

    @property
    def ttft_limit_s(self) -> float | None:
        """The TTFT a request must beat to count as attained: the tightest TTFT target."""
        ttfts = [v for k, v in self.times.items() if k.startswith("ttft_")]
        return min(ttfts) if ttfts else None

    def as_json(self) -> dict[str, float | None]:
        return {**self.times, "error_rate": self.error_rate}


def parse_sla(text: str) -> Sla:
    """``ttft_p95=2s,error_rate=0.01``: times as ``2s``, ``500ms`` or bare seconds."""
    times: dict[str, float] = {}
    error_rate: float | None = None
    for part in (p.strip() for p in text.split(",")):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not value:
            raise SimulationInputError(f"--sla {text!r}: write KEY=VALUE pairs, comma-separated")
        if key == "error_rate":
            try:
                error_rate = float(value)
            except ValueError:
                error_rate = math.nan
            if not 0 <= error_rate <= 1:
                raise SimulationInputError(f"--sla error_rate must be in 0..1, not {value!r}")
        elif key in _SLA_TIMES:
            match = _DURATION.fullmatch(value)
            if match is None:
                raise SimulationInputError(
                    f"--sla {key}: a duration like 2s or 500ms, not {value!r}"
                )
            seconds = float(match.group(1)) / (1000.0 if match.group(2) == "ms" else 1.0)
            if seconds <= 0:
                raise SimulationInputError(f"--sla {key} must be positive")
            times[key] = seconds
        else:
            known = ", ".join((*_SLA_TIMES, "error_rate"))
            raise SimulationInputError(f"--sla: unknown target {key!r} (known: {known})")
    return Sla(times=times, error_rate=error_rate)
