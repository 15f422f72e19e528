"""``tidegate batch submit``'s input file: bare bodies become full batch lines."""

from __future__ import annotations

import orjson
import pytest

from tidegate.commands.batch_input import InputFileError, build_input_file

CHAT = "/v1/chat/completions"


def lines(content: bytes) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in content.splitlines()]


def test_bare_bodies_get_ids_from_their_line_numbers_and_the_model() -> None:
    source = b'{"messages": []}\n\n{"prompt": "x", "model": "own"}\n'
    content, count = build_input_file(source, endpoint=CHAT, model="m")
    assert count == 2
    head = {"method": "POST", "url": CHAT}
    assert lines(content) == [
        {"custom_id": "line-1", **head, "body": {"messages": [], "model": "m"}},
        {"custom_id": "line-3", **head, "body": {"prompt": "x", "model": "own"}},
    ]


def test_full_lines_are_kept_and_completed() -> None:
    full = {"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {"prompt": "p"}}
    partial = {"custom_id": "b", "body": {"model": "x", "prompt": "q"}}
    content, _ = build_input_file(
        orjson.dumps(full) + b"\n" + orjson.dumps(partial), endpoint=CHAT, model="m"
    )
    assert lines(content) == [
        {**full, "body": {"prompt": "p", "model": "m"}},
        {"custom_id": "b", "body": {"model": "x", "prompt": "q"}, "method": "POST", "url": CHAT},
    ]


@pytest.mark.parametrize(
    ("source", "model", "message"),
    [
        (b'{"messages": []}\n[1]\n', "m", "line 2: expected a JSON object"),
        (b"{oops\n", "m", "line 1: not valid JSON"),
        (b'{"messages": []}\n', None, "line 1: the request has no model; pass --model"),
        (b'{"custom_id": "a", "body": 3}\n', "m", "line 1: body must be a JSON object"),
        (b"\n\n", "m", "the file has no requests"),
    ],
)
def test_unusable_files_name_the_line(source: bytes, model: str | None, message: str) -> None:
    with pytest.raises(InputFileError, match=message):
        build_input_file(source, endpoint=CHAT, model=model)
