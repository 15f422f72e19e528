"""The Batch API's request parsing (no I/O)."""

from __future__ import annotations

import pytest

from tidegate.errors import InvalidRequestError
from tidegate.protocol.batches import parse_create, parse_window

DAY = 24 * 3600.0


@pytest.mark.parametrize(("window", "seconds"), [("24h", DAY), ("30m", 1800.0), ("5s", 5.0)])
def test_completion_windows(window: str, seconds: float) -> None:
    assert parse_window(window, DAY) == seconds


@pytest.mark.parametrize("window", ["25h", "0s", "1d", "24", "", None, 24])
def test_bad_or_too_long_windows_are_refused(window: object) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        parse_window(window, DAY)
    assert refused.value.param == "completion_window"


def test_create_request_fields() -> None:
    body = {
        "input_file_id": "file-1",
        "endpoint": "/v1/completions",
        "completion_window": "24h",
        "metadata": {"job": "nightly"},
    }
    parsed = parse_create(body, max_window_s=DAY)
    assert (parsed.endpoint, parsed.window_s, parsed.metadata) == (
        "/v1/completions",
        DAY,
        {"job": "nightly"},
    )


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"endpoint": "/v1/embeddings"}, "endpoint"),
        ({"endpoint": {}}, "endpoint"),  # unhashable: was a 500 (schemathesis found it)
        ({"endpoint": ["/v1/completions"]}, "endpoint"),
        ({"input_file_id": ""}, "input_file_id"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k": 1}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata"),
    ],
)
def test_create_request_errors_name_the_field(change: dict[str, object], param: str) -> None:
    body = {"input_file_id": "f", "endpoint": "/v1/completions", "completion_window": "24h"}
    with pytest.raises(InvalidRequestError) as refused:
        parse_create({**body, **change}, max_window_s=DAY)
    assert refused.value.param == param
