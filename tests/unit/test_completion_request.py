"""``CompletionRequest``: the body parsed once, the client's fields kept, the gateway's edits
explicit, and one serialisation per wire shape until an edit."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import pytest

from tidegate.protocol.requests import BodyCaps, CompletionRequest, RequestValidationFailure

CAPS = BodyCaps(max_messages=8, max_prompts=8)
BODY = {
    "model": "m",
    "messages": [{"role": "user", "content": "hi"}],
    "stream": True,
    "guided_json": {"type": "object"},  # an engine extension tidegate knows nothing of
}


def as_sent(fields: Mapping[str, Any]) -> Mapping[str, Any]:
    return fields


def test_unknown_fields_pass_through_untouched_and_the_typed_ones_are_read_once() -> None:
    request = CompletionRequest.checked("chat", dict(BODY), CAPS)
    assert (request.route, request.model, request.stream) == ("chat", "m", True)
    assert orjson.loads(request.encode(None, as_sent)) == BODY


def test_a_body_the_schema_refuses_never_becomes_a_request() -> None:
    with pytest.raises(RequestValidationFailure) as caught:
        CompletionRequest.checked("chat", {**BODY, "stream": "true"}, CAPS)
    assert caught.value.param == "stream"


def test_each_shape_is_serialised_once_until_an_edit() -> None:
    request = CompletionRequest("chat", dict(BODY))
    first = request.encode(None, as_sent)
    assert request.encode(None, as_sent) is first  # a retry sends the same bytes
    renamed = request.encode(("openai", "m2", None), lambda f: {**f, "model": "m2"})
    assert orjson.loads(renamed)["model"] == "m2"
    assert request.encodings == 2
    request.set("max_tokens", 7)
    request.drop("guided_json")
    sent = orjson.loads(request.encode(None, as_sent))
    assert sent["max_tokens"] == 7 and "guided_json" not in sent
    assert request.encodings == 3


def test_derive_leaves_the_original_alone() -> None:
    request = CompletionRequest("chat", {**BODY, "stream": False})
    shadow = request.derive(stream=True, stream_options={"include_usage": True})
    assert shadow.stream and not request.stream
    assert "stream_options" not in request.fields
