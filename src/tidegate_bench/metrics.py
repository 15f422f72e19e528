"""A target's figures for one load point, defined as ``vllm bench serve`` defines them.

- Duration: from the end of the warm-up to the completion of the last measured request.
- Request throughput: completed measured requests / duration; output-token throughput: their
  output tokens / duration; total-token throughput adds their prompt tokens.
- Goodput: measured requests that meet every SLO set / duration (None without SLOs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tidegate_bench.cost import cost_block, total_cost
from tidegate_bench.records import RequestRecord
from tidegate_bench.spec import Slo, Target
from tidegate_bench.stats import summarize

ERROR_CLASSES = ("http_429", "http_5xx", "timeout", "connect", "other")


def is_good(record: RequestRecord, slo: Slo) -> bool:
    checks = (
        (slo.ttft_ms, record.ttft_ms),
        (slo.tpot_ms, record.tpot_ms),
        (slo.e2el_ms, record.e2el_ms),
    )
    if not record.ok:
        return False
    # A request without a TPOT (one output token) meets any TPOT bound, as in vLLM.
    return all(bound is None or value is None or value <= bound for bound, value in checks)


def measured_duration(records: Sequence[RequestRecord], window_start_s: float) -> float:
    ends = [r.end_s for r in records if r.measured]
    return max(ends) - window_start_s if ends else 0.0


def timeline(records: Sequence[RequestRecord]) -> list[list[float]]:
    """[second, completed, output tokens] per whole second of the run, warm-up included."""
    if not records:
        return []
    seconds = int(math.floor(max(r.end_s for r in records))) + 1
    done = [0] * seconds
    tokens = [0] * seconds
    for r in records:
        if r.ok:
            s = int(r.end_s)
            done[s] += 1
            tokens[s] += r.output_tokens or 0
    return [[float(i), float(done[i]), float(tokens[i])] for i in range(seconds)]


def target_figures(
    *,
    target: Target,
    model: str,
    records: Sequence[RequestRecord],
    window_start_s: float,
    slo: Slo,
    csv_path: str,
) -> dict[str, object]:
    measured = [r for r in records if r.measured]
    ok = [r for r in measured if r.ok]
    duration = measured_duration(records, window_start_s)
    errors = {name: 0 for name in ERROR_CLASSES}
    for r in measured:
        if not r.ok:
            errors[r.error if r.error in errors else "other"] += 1
    input_tokens = sum(r.prompt_tokens or 0 for r in ok)
    output_tokens = sum(r.output_tokens or 0 for r in ok)
    good = sum(1 for r in ok if is_good(r, slo)) if slo.any else None

    def rate(n: float) -> float:
        return n / duration if duration > 0 else 0.0

    itl = [gap for r in ok for gap in r.itl_ms()]
    total = total_cost(target.prices, measured, duration)
    return {
        "name": target.name,
        "url": target.url,
        "model": model,
        "completed": len(ok),
        "failed": len(measured) - len(ok),
        "errors": errors,
        "duration_s": duration,
        "request_throughput": rate(len(ok)),
        "output_throughput": rate(output_tokens),
        "total_token_throughput": rate(input_tokens + output_tokens),
        "goodput": rate(good) if good is not None else None,
        "good_requests": good,
        "total_input_tokens": input_tokens,
        "total_output_tokens": output_tokens,
        "token_mismatches": sum(1 for r in ok if r.token_mismatch),
        "ttft_ms": summarize([v for r in ok if (v := r.ttft_ms) is not None]),
        "tpot_ms": summarize([v for r in ok if (v := r.tpot_ms) is not None]),
        "itl_ms": summarize(itl),
        "e2el_ms": summarize([v for r in ok if (v := r.e2el_ms) is not None]),
        "cost": cost_block(total, completed=len(ok), good=good, output_tokens=output_tokens),
        "timeline": timeline(records),
        "requests_csv": csv_path,
    }
