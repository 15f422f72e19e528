"""The shadow comparison's pure functions: answer checks, latency figures, summaries."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from tidegate.observability.capture import ResponseCapture
from tidegate.observability.records import RequestRecord
from tidegate.percentiles import percentile
from tidegate.rollout.compare import (
    Expectations,
    Side,
    compare,
    expectations,
    is_refusal,
    json_valid,
    primary_side,
    similarity,
    tool_calls_ok,
)
from tidegate.rollout.shadow_reports import side_summary, summarise

SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "a", "schema": {"type": "object", "required": ["city", "temp"]}},
}


def captured(text: str = "", finish: str | None = "stop") -> ResponseCapture:
    capture = ResponseCapture(texts=[text] if text else [])
    capture.finish_reason = finish
    return capture


def tool_capture(*calls: tuple[str, str]) -> ResponseCapture:
    capture = ResponseCapture()
    for index, (name, arguments) in enumerate(calls):
        capture.add_stream_choices(
            [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {"index": index, "function": {"name": name, "arguments": arguments}}
                        ]
                    },
                }
            ]
        )
    return capture


def side(text: str = "hello", error: str | None = None, **fields: Any) -> Side:
    values: dict[str, Any] = {"ttft_s": 0.1, "itl_s": 0.01, "e2e_s": 0.5, "error": error}
    values.update(fields)
    values.setdefault("capture", captured(text))
    return Side(**values)


# -- what the request asked for -------------------------------------------------------------------


def test_expectations_read_json_modes_schema_keys_and_tools() -> None:
    assert expectations({}) == Expectations()
    assert expectations({"response_format": {"type": "text"}}) == Expectations()
    assert expectations({"response_format": {"type": "json_object"}}).json_mode == "json_object"
    schema = expectations({"response_format": SCHEMA_FORMAT, "tools": [{"type": "function"}]})
    assert schema == Expectations(
        json_mode="json_schema", required_keys=("city", "temp"), tools=True
    )
    assert not expectations({"tools": []}).tools
    broken = {"type": "json_schema", "json_schema": {"schema": {"required": "city"}}}
    assert expectations({"response_format": broken}).required_keys == ()


# -- checks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "valid"),
    [
        ('{"a": 1}', Expectations(json_mode="json_object"), True),
        ('{"a": 1', Expectations(json_mode="json_object"), False),
        ("[1, 2]", Expectations(json_mode="json_object"), False),
        ("sure! {}", Expectations(json_mode="json_object"), False),
        ('{"city": "Paris", "temp": 3}', expectations({"response_format": SCHEMA_FORMAT}), True),
        ('{"city": "Paris"}', expectations({"response_format": SCHEMA_FORMAT}), False),
        ("not json", Expectations(), None),
    ],
)
def test_json_validity(text: str, expected: Expectations, valid: bool | None) -> None:
    assert json_valid(text, expected) is valid


def test_tool_calls_need_a_name_and_object_arguments() -> None:
    tools = Expectations(tools=True)
    assert tool_calls_ok(tool_capture(("f", '{"x": 1}'), ("g", "{}")), tools) is True
    assert tool_calls_ok(tool_capture(("f", '{"x": 1')), tools) is False
    assert tool_calls_ok(tool_capture(("f", "[1]")), tools) is False
    assert tool_calls_ok(tool_capture(("", "{}")), tools) is False
    assert tool_calls_ok(captured("plain text"), tools) is True  # no call is no broken call
    assert tool_calls_ok(tool_capture(("f", "{")), Expectations()) is None


def test_arguments_streamed_in_pieces_are_joined() -> None:
    capture = tool_capture(("f", '{"x":'))
    capture.add_stream_choices(
        [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": " 2}"}}]}}]
    )
    assert tool_calls_ok(capture, Expectations(tools=True)) is True


@pytest.mark.parametrize(
    ("text", "refusal"),
    [
        ("I can't help with that request.", True),
        ("  I\u2019m sorry, but I can\u2019t assist with that.", True),
        ("As an AI language model, I do not have opinions.", True),
        ("i cannot assist with this", True),
        ("Paris is the capital of France. I can't help with more.", False),
        ("", False),
    ],
)
def test_refusal_heuristic_looks_at_the_start(text: str, refusal: bool) -> None:
    assert is_refusal(text) is refusal


def test_similarity_is_one_for_equal_texts_and_bounded_for_long_ones() -> None:
    assert similarity("abc", "abc") == 1.0
    assert 0 < similarity("the capital is Paris", "the capital is Lyon") < 1
    assert similarity("a" * 100_000, "b" * 100_000) == 0.0  # capped: returns at once


# -- a comparison ---------------------------------------------------------------------------------


def test_compare_fills_both_sides_and_the_difference() -> None:
    expected = Expectations(json_mode="json_object")
    result = compare(side('{"a": 1}'), side('{"a": 1'), expected)
    assert result.outputs_differ is True
    assert result.similarity is not None and 0.8 < result.similarity < 1
    assert result.primary["json_valid"] is True
    assert result.shadow["json_valid"] is False
    assert result.primary == {
        "ttft_ms": 100.0,
        "itl_ms": 10.0,
        "e2e_ms": 500.0,
        "error": None,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "finish_reason": "stop",
        "json_valid": True,
        "tool_calls_ok": None,
        "refusal": False,
    }
    assert "text" not in result.shadow


def test_whitespace_alone_is_no_difference() -> None:
    result = compare(side("Paris  is\nnice "), side("Paris is nice"), Expectations())
    assert result.outputs_differ is False
    assert result.similarity == 1.0


def test_a_failed_side_leaves_checks_and_difference_unknown() -> None:
    expected = Expectations(json_mode="json_object", tools=True)
    result = compare(side("{}"), side("", error="timeout"), expected)
    assert result.outputs_differ is None and result.similarity is None
    assert result.shadow["error"] == "timeout"
    assert result.shadow["json_valid"] is None
    assert result.shadow["tool_calls_ok"] is None
    assert result.shadow["refusal"] is None
    assert result.primary["json_valid"] is True


def test_texts_are_kept_only_through_the_redactor() -> None:
    result = compare(side("secret a"), side("secret b"), Expectations(), keep_text=str.upper)
    assert result.primary["text"] == "SECRET A"
    assert result.shadow["text"] == "SECRET B"


def test_primary_side_from_its_record() -> None:
    record = RequestRecord(request_id="r1", route="chat")
    record.ttft_s = 0.2
    record.completion_tokens = 11
    record.prompt_tokens = 7
    record.capture = captured("hi")
    primary = primary_side(record, 1.2)
    assert primary.error is None
    assert primary.itl_s == pytest.approx(0.1)
    assert primary.e2e_s == 1.2
    assert primary.prompt_tokens == 7
    record.outcome = "upstream"
    record.error_type = "upstream_error"
    record.completion_tokens = 1
    failed = primary_side(record, 1.2)
    assert failed.error == "upstream_error"
    assert failed.itl_s is None


# -- summaries ------------------------------------------------------------------------------------


def test_percentile_interpolates() -> None:
    assert percentile([], 50) is None
    assert percentile([5.0], 95) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile(list(map(float, range(101))), 95) == 95.0


def test_side_summary_rates_skip_unknown_checks_and_latency_skips_errors() -> None:
    sides = [
        {"error": None, "ttft_ms": 10, "itl_ms": 1, "e2e_ms": 100, "json_valid": True},
        {"error": None, "ttft_ms": 30, "itl_ms": 3, "e2e_ms": 300, "json_valid": False},
        {"error": "timeout", "ttft_ms": None, "itl_ms": None, "e2e_ms": 9000, "json_valid": None},
        {"error": None, "ttft_ms": 20, "itl_ms": 2, "e2e_ms": 200, "refusal": True},
    ]
    summary = side_summary(sides)
    assert summary.errors == 1
    assert summary.error_rate == 0.25
    assert summary.ttft_p50_ms == 20
    assert summary.e2e_p95_ms == pytest.approx(290)  # the timed-out 9 s is not a latency
    assert summary.json_valid_rate == 0.5
    assert summary.tool_calls_ok_rate is None
    assert summary.refusal_rate == 1.0


def test_summarise_a_pair() -> None:
    row = SimpleNamespace(
        primary={"error": None, "e2e_ms": 10}, shadow={"error": None, "e2e_ms": 20}
    )
    rows = [
        SimpleNamespace(**vars(row), outputs_differ=True, similarity=0.5),
        SimpleNamespace(**vars(row), outputs_differ=False, similarity=1.0),
        SimpleNamespace(**vars(row), outputs_differ=None, similarity=None),
    ]
    pair = summarise(("stable", "candidate"), rows)
    assert (pair.primary_pool, pair.shadow_pool, pair.count) == ("stable", "candidate", 3)
    assert pair.difference_rate == 0.5
    assert pair.mean_similarity == 0.75
    assert pair.shadow.e2e_p50_ms == 20
