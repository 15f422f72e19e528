"""Traffic traces for the scaling simulator: when each request arrived and how big it was.

Two formats, told apart by the first line:

- the bench's per-request CSV (``tidegate bench`` writes one per run and target): the arrival is
  ``scheduled_s`` (when the request was due, so a client that fell behind does not thin the
  trace), the sizes are ``prompt_tokens`` and ``output_tokens``. A failed request has no token
  counts; it still arrived, so it gets the median of the rows that have them;
- JSON Lines, one object per request: ``{"t": seconds, "prompt_tokens": n,
  "completion_tokens": m}``.

Anything else, or any bad value, is a ``TraceError`` naming the file and line.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from tidegate.plan.errors import PlanInputError

_CSV_COLUMNS = ("scheduled_s", "prompt_tokens", "output_tokens")
_JSON_KEYS = frozenset({"t", "prompt_tokens", "completion_tokens"})
_MAX_TOKENS = 10_000_000


class TraceError(PlanInputError):
    """The trace file cannot be read as a trace."""


@dataclass(frozen=True, slots=True)
class TraceRequest:
    t: float
    """Arrival, seconds from the trace's start."""
    prompt_tokens: int
    completion_tokens: int


def load_trace(path: Path) -> list[TraceRequest]:
    """The trace's requests in arrival order (at least one); the simulation starts at t = 0."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"cannot read trace {path}: {exc}") from exc
    first = text.lstrip()[:1]
    requests = _jsonl(path, text) if first == "{" else _bench_csv(path, text)
    if not requests:
        raise TraceError(f"trace {path} holds no requests")
    requests.sort(key=lambda r: r.t)
    return requests  # times kept as given, so a timeline lines up with the run it came from


def _seconds(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TraceError(f"{where}: the arrival time must be a number, not {value!r}")
    try:
        number = float(value)
    except ValueError as exc:
        raise TraceError(f"{where}: the arrival time must be a number, not {value!r}") from exc
    if not math.isfinite(number) or number < 0:
        raise TraceError(f"{where}: the arrival time must be finite and >= 0, not {value!r}")
    return number


def _tokens(value: object, name: str, where: str) -> int:
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_TOKENS:
        raise TraceError(
            f"{where}: {name} must be a whole number 0..{_MAX_TOKENS:,}, not {value!r}"
        )
    return value


def _jsonl(path: Path, text: str) -> list[TraceRequest]:
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TraceError(f"{where}: not JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise TraceError(f"{where}: each line must be a JSON object")
        if missing := sorted(_JSON_KEYS - row.keys()):
            raise TraceError(f"{where}: missing {', '.join(missing)}")
        if unknown := sorted(row.keys() - _JSON_KEYS):
            raise TraceError(f"{where}: unknown field {', '.join(unknown)}")
        out.append(
            TraceRequest(
                _seconds(row["t"], where),
                _tokens(row["prompt_tokens"], "prompt_tokens", where),
                _tokens(row["completion_tokens"], "completion_tokens", where),
            )
        )
    return out


def _bench_csv(path: Path, text: str) -> list[TraceRequest]:
    reader = csv.DictReader(text.splitlines())
    header = reader.fieldnames or []
    if missing := [c for c in _CSV_COLUMNS if c not in header]:
        raise TraceError(
            f"{path} is neither JSON Lines nor a bench request CSV: no column "
            f"{', '.join(missing)} (the bench CSV has scheduled_s, prompt_tokens, output_tokens)"
        )
    rows: list[tuple[float, int | None, int | None]] = []
    for number, row in enumerate(reader, start=2):
        where = f"{path}:{number}"
        if None in row or any(row.get(c) is None for c in _CSV_COLUMNS):
            raise TraceError(f"{where}: the row has a different number of fields than the header")
        prompt, output = row["prompt_tokens"].strip(), row["output_tokens"].strip()
        rows.append((
            _seconds(row["scheduled_s"].strip(), where),
            _tokens(prompt, "prompt_tokens", where) if prompt else None,
            _tokens(output, "output_tokens", where) if output else None,
        ))  # fmt: skip
    prompts = [p for _, p, _ in rows if p is not None]
    outputs = [o for _, _, o in rows if o is not None]
    if rows and (not prompts or not outputs):
        raise TraceError(f"{path}: no row has token counts (did every request fail?)")
    fill_prompt = round(statistics.median(prompts)) if prompts else 0
    fill_output = round(statistics.median(outputs)) if outputs else 0
    return [
        TraceRequest(t, fill_prompt if p is None else p, fill_output if o is None else o)
        for t, p, o in rows
    ]
