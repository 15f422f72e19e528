"""The content-safety gates in the overhead benchmark: tidegate as `make run` starts it, with one
policy on the benchmark model, and what each gate adds over the same gateway without it.

- tidegate-denylist: a 200-term deny-list on the input and on the output (streams checked on
  the sliding window with the default hold);
- tidegate-pii: the redactor's detectors (every family) blocking on the input;
- tidegate-guard: a classifier check on the input, asking a fake guard model (Llama Guard's
  answer format) served as one of the gateway's own pools, on loopback like the upstream.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from benchmarks.report import Row
from benchmarks.targets import Launch, fake_upstream_launch, with_config_file

GUARD_MODEL = "bench-guard"
GUARD_UNSAFE_WORD = "never-in-a-prompt"
"""The one word the fake guard calls unsafe: the benchmark's prompts never hold it."""
REFUSED_PROMPTS = {
    "tidegate-denylist": "say blocked-term-7 please",
    "tidegate-pii": "mail the answer to jane.doe@example.com",
    "tidegate-guard": f"tell me about {GUARD_UNSAFE_WORD}",
}
"""Per gate, a prompt it must refuse: checked once before the load, so a gate that is not
enforced is reported as skipped rather than measured as free."""
_DENY = {"kind": "deny_list", "terms": [f"blocked-term-{i}" for i in range(200)]}
GATE_VARIANTS: dict[str, dict[str, Any]] = {
    "tidegate-denylist": {"input": [_DENY], "output": [_DENY]},
    "tidegate-pii": {"input": [{"kind": "pii"}]},
    "tidegate-guard": {
        "input": [{"kind": "classifier", "name": "guard", "pool": GUARD_MODEL, "timeout_s": 5}]
    },
}
BASELINE = "tidegate"
"""The gateway the gates are measured against: the same process without a policy."""


def guard_launch(port: int) -> Launch:
    """The fake guard model: one short answer (``safe``) per request."""
    launch = fake_upstream_launch(port=port, model=GUARD_MODEL, tokens=1)
    return replace(launch, command=[*launch.command, "--guard-unsafe-word", GUARD_UNSAFE_WORD])


def gated_launch(
    launch: Launch,
    config_path: Path,
    *,
    variant: str,
    model: str,
    upstream_base_url: str,
    guard_base_url: str | None,
) -> Launch:
    """``launch`` (a plain `tidegate up --upstream URL --model M`) with the variant's policy on
    ``model`` and, for the classifier, the guard model as a pool of its own."""
    upstreams = [{"url": upstream_base_url, "model": model}]
    if guard_base_url is not None:
        upstreams.append({"url": guard_base_url, "model": GUARD_MODEL})
    config = {
        "upstreams": upstreams,
        "safety": {"policies": {"bench": GATE_VARIANTS[variant]}, "models": {model: "bench"}},
    }
    return with_config_file(launch, config_path, config)


def check_enforced(
    variant: str, base_url: str, model: str, headers: tuple[tuple[str, str], ...]
) -> str | None:
    """None when the gateway refuses the variant's refused prompt as a content-policy
    violation; else what it did instead."""
    body = {"model": model, "messages": [{"role": "user", "content": REFUSED_PROMPTS[variant]}]}
    request = urllib.request.Request(
        f"{base_url}/chat/completions",
        data=orjson.dumps(body),
        headers={"Content-Type": "application/json", **dict(headers)},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return f"the gate let a prompt it must refuse through ({response.status})"
    except urllib.error.HTTPError as error:
        code = orjson.loads(error.read()).get("error", {}).get("code")
        if error.code == 400 and code == "content_policy_violation":
            return None
        return f"the gate's probe got {error.code} {code}, not content_policy_violation"


def gate_costs(rows: list[Row]) -> list[dict[str, Any]]:
    """Per gate and scenario: its latency and throughput beside the ungated gateway's."""
    baseline = {row.scenario: row for row in rows if row.target == BASELINE}
    costs = []
    for row in rows:
        base = baseline.get(row.scenario)
        if row.target not in GATE_VARIANTS or base is None:
            continue
        costs.append(
            {
                "gate": row.target.removeprefix("tidegate-"),
                "scenario": row.scenario,
                "added_p50_ms": _minus(row.p50_ms, base.p50_ms),
                "added_p99_ms": _minus(row.p99_ms, base.p99_ms),
                "added_ttft_p50_ms": _minus(row.ttft_p50_ms, base.ttft_p50_ms),
                "rps": row.rps,
                "baseline_rps": base.rps,
                "errors": row.errors,
            }
        )
    return costs


def render_gates(costs: list[dict[str, Any]], console: Console) -> None:
    if not costs:
        return
    table = Table(title=f"Content-safety gates: latency added over plain {BASELINE}")
    for column in ("gate", "scenario", "+p50 ms", "+p99 ms", "+TTFT p50 ms", "req/s", "errors"):
        table.add_column(column, justify="left" if column in ("gate", "scenario") else "right")
    for cost in costs:
        table.add_row(
            cost["gate"],
            cost["scenario"],
            _ms(cost["added_p50_ms"]),
            _ms(cost["added_p99_ms"]),
            _ms(cost["added_ttft_p50_ms"]),
            f"{cost['rps']:,.0f} (vs {cost['baseline_rps']:,.0f})",
            str(cost["errors"]),
        )
    console.print(table)


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"
