"""Comparing a primary answer with its shadow's: pure functions, no I/O.

Per side the comparison keeps latency (TTFT, ITL, E2E in ms), the error, token counts, the
finish reason and three answer checks, each None when it does not apply or the side failed:

- ``json_valid``: the request asked for JSON (``response_format`` json_object or json_schema)
  and the text parses as a JSON object; with a schema that lists ``required`` top-level keys,
  those keys are present.
- ``tool_calls_ok``: the request offered ``tools`` and every tool call in the answer has a name
  and arguments that parse as a JSON object (an answer without tool calls passes: it is not a
  formatting failure).
- ``refusal``: a heuristic — the answer starts with a common refusal phrase (``REFUSAL_PREFIXES``,
  case-insensitive, curly apostrophes normalised). Cheap and language-bound: it is a trend
  signal for the comparison, not a classifier.

Across sides: ``outputs_differ`` (whitespace-normalised texts differ) and ``similarity``
(difflib ratio on the first ``SIMILARITY_CHARS`` characters, to bound its quadratic cost); both
None when either side failed.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from tidegate.observability.capture import ResponseCapture
from tidegate.observability.records import RequestRecord

SIMILARITY_CHARS = 2000
REFUSAL_PREFIXES: tuple[str, ...] = (
    "i can't help with",
    "i cannot help with",
    "i can't assist",
    "i cannot assist",
    "i can't provide",
    "i cannot provide",
    "i can't do that",
    "i cannot do that",
    "i'm unable to",
    "i am unable to",
    "i'm not able to",
    "i am not able to",
    "i won't be able to",
    "i must decline",
    "i'm sorry, but i can",
    "i am sorry, but i can",
    "sorry, but i can",
    "sorry, i can't",
    "sorry, i cannot",
    "as an ai",
)

JsonMode = Literal["json_object", "json_schema"]


@dataclass(frozen=True, slots=True)
class Expectations:
    """What the request asked of the answer's format."""

    json_mode: JsonMode | None = None
    required_keys: tuple[str, ...] = ()
    """Top-level keys a json_schema's ``required`` lists."""
    tools: bool = False


@dataclass(frozen=True, slots=True)
class Side:
    """One side's answer as measured (times in seconds; None when unknown)."""

    ttft_s: float | None
    itl_s: float | None
    e2e_s: float | None
    error: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    capture: ResponseCapture | None = None


@dataclass(frozen=True, slots=True)
class Comparison:
    primary: dict[str, Any]
    shadow: dict[str, Any]
    outputs_differ: bool | None
    similarity: float | None


def expectations(payload: Mapping[str, Any]) -> Expectations:
    """Read the format the request asked for from its body."""
    tools = payload.get("tools")
    has_tools = isinstance(tools, list) and bool(tools)
    response_format = payload.get("response_format")
    if not isinstance(response_format, dict):
        return Expectations(tools=has_tools)
    kind = response_format.get("type")
    if kind == "json_object":
        return Expectations(json_mode="json_object", tools=has_tools)
    if kind != "json_schema":
        return Expectations(tools=has_tools)
    return Expectations(
        json_mode="json_schema", required_keys=_required_keys(response_format), tools=has_tools
    )


def _required_keys(response_format: dict[str, Any]) -> tuple[str, ...]:
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    required = schema.get("required") if isinstance(schema, dict) else None
    if not isinstance(required, list):
        return ()
    return tuple(key for key in required if isinstance(key, str))


def json_valid(text: str, expected: Expectations) -> bool | None:
    if expected.json_mode is None:
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(value, dict):
        return False  # both JSON modes promise an object
    return all(key in value for key in expected.required_keys)


def tool_calls_ok(capture: ResponseCapture | None, expected: Expectations) -> bool | None:
    if not expected.tools:
        return None
    if capture is None:
        return None
    for name, arguments in capture.tool_call_arguments():
        if not name:
            return False
        try:
            parsed = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(parsed, dict):
            return False
    return True


def is_refusal(text: str) -> bool:
    start = text.lstrip()[:80].lower().replace("\u2019", "'")
    return start.startswith(REFUSAL_PREFIXES)


def normalised(text: str) -> str:
    return " ".join(text.split())


def similarity(a: str, b: str) -> float:
    if a == b:
        return 1.0
    matcher = difflib.SequenceMatcher(None, a[:SIMILARITY_CHARS], b[:SIMILARITY_CHARS])
    return round(matcher.ratio(), 4)


def primary_side(record: RequestRecord, duration_s: float) -> Side:
    """The primary's figures from its request record. Its TTFT counts from arrival at the
    gateway (so it includes admission and any queue wait); its ITL is the mean gap after the
    first token, (E2E − TTFT) / (completion tokens − 1)."""
    ttft = record.ttft_s
    tokens = record.completion_tokens
    itl = None
    if ttft is not None and tokens >= 2:
        itl = max(0.0, duration_s - ttft) / (tokens - 1)
    error = None if record.outcome == "ok" else (record.error_type or record.outcome)
    return Side(
        ttft_s=ttft,
        itl_s=itl,
        e2e_s=duration_s,
        error=error,
        prompt_tokens=record.prompt_tokens,
        completion_tokens=tokens,
        capture=record.capture,
    )


def side_fields(
    side: Side, expected: Expectations, *, keep_text: Callable[[str], str] | None
) -> dict[str, Any]:
    """The JSON a comparison row stores for one side; ``keep_text`` (the redactor) only when
    the tenant logs prompts."""
    text = side.capture.text if side.capture is not None else ""
    answered = side.error is None
    fields: dict[str, Any] = {
        "ttft_ms": _ms(side.ttft_s),
        "itl_ms": _ms(side.itl_s),
        "e2e_ms": _ms(side.e2e_s),
        "error": side.error,
        "prompt_tokens": side.prompt_tokens,
        "completion_tokens": side.completion_tokens,
        "finish_reason": side.capture.finish_reason if side.capture is not None else None,
        "json_valid": json_valid(text, expected) if answered else None,
        "tool_calls_ok": tool_calls_ok(side.capture, expected) if answered else None,
        "refusal": is_refusal(text) if answered and side.capture is not None else None,
    }
    if keep_text is not None:
        fields["text"] = keep_text(text)
    return fields


def compare(
    primary: Side,
    shadow: Side,
    expected: Expectations,
    *,
    keep_text: Callable[[str], str] | None = None,
) -> Comparison:
    differ: bool | None = None
    ratio: float | None = None
    both = primary.error is None and shadow.error is None
    if both and primary.capture is not None and shadow.capture is not None:
        a, b = normalised(primary.capture.text), normalised(shadow.capture.text)
        differ = a != b
        ratio = similarity(a, b)
    return Comparison(
        primary=side_fields(primary, expected, keep_text=keep_text),
        shadow=side_fields(shadow, expected, keep_text=keep_text),
        outputs_differ=differ,
        similarity=ratio,
    )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
