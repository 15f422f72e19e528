"""Inputs the adversarial suite (schemathesis, the fuzzers) found answered with a 500 or a crash;
each is now a 400 naming the field."""

from __future__ import annotations

import pytest

from tidegate.pipeline.redaction import Redactor, scan_for_secrets
from tidegate.protocol.requests import BodyCaps, RequestValidationFailure, check_chat
from tidegate.protocol.sse import SSESplitter, event_data

CAPS = BodyCaps(max_messages=16, max_prompts=16)


@pytest.mark.parametrize("role", [{}, [], ["user"], 3, "superuser"])
def test_a_message_role_of_any_json_type_is_a_400_naming_it(role: object) -> None:
    # {"role": {}} raised TypeError (unhashable) inside the membership test: a 500.
    with pytest.raises(RequestValidationFailure) as failure:
        check_chat({"model": "m", "messages": [{"role": role}]}, CAPS)
    assert failure.value.param == "messages.0.role"
    assert "one of" in failure.value.message


def _split(reads: list[bytes]) -> tuple[list[bytes], bytes]:
    splitter = SSESplitter()
    events = [event for read in reads for event in splitter.feed(read)]
    return events, splitter.pending


SSE_STREAM = b"data: a\r\r\n\n:x\r\n\r\n"


@pytest.mark.parametrize("cut", range(1, len(SSE_STREAM)))
def test_sse_events_do_not_depend_on_where_the_reads_were_cut(cut: int) -> None:
    # The whole buffer was re-normalised on every read: "\r\r\n" became "\r\n" or "\n"
    # depending on the cut.
    stream = SSE_STREAM
    assert _split([stream[:cut], stream[cut:]]) == _split([stream])
    assert _split([stream]) == ([b"data: a\r\n\n", b":x\n\n"], b"")


def test_sse_multi_line_data_keeps_spaces_after_the_first() -> None:
    # The slow path stripped every leading space of each data line; SSE strips exactly one.
    assert event_data(b"data:  indented\ndata: next\n\n") == b" indented\nnext"
    assert event_data(b"data:  indented\n\n") == b" indented"
    assert event_data(b"data:a\ndata:b\n\n") == b"a\nb"


KEY = "tg-" + "a1B2c3D4e5F6g7H8i9J0kLmN"


@pytest.mark.parametrize(
    "text",
    [
        f"我的密钥是{KEY}是的",  # Chinese: no spaces between words
        f"คีย์{KEY}ครับ",  # Thai
        f"clé:{KEY}é",
        f"key {KEY}က",
    ],
)
def test_a_key_between_letters_of_any_script_is_redacted(text: str) -> None:
    # \w and isalnum() were Unicode: a letter right after (or before) the key hid it.
    redacted = Redactor().redact(text)
    assert KEY not in redacted and "[SECRET]" in redacted
    assert not scan_for_secrets(redacted)


def test_a_card_number_after_chinese_text_is_redacted() -> None:
    assert Redactor().redact("卡号4111111111111111谢谢") == "卡号[CARD]谢谢"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+44 20 7946 0958+44 20 7946 0959", "[PHONE][PHONE]"),
        ("(555) 010-0199(555) 010-0198", "[PHONE][PHONE]"),
        ("+44 20 7946 0958+44 20 7946 0959+44 20 7946 0957", "[PHONE][PHONE][PHONE]"),
    ],
)
def test_a_phone_number_glued_to_another_is_redacted_too(text: str, expected: str) -> None:
    # One pass only saw the first: the second's boundary check failed on the digit before it.
    redacted = Redactor().redact(text)
    assert redacted == expected
    assert Redactor().redact(redacted) == redacted
