"""Inputs the adversarial suite (schemathesis, the fuzzers) found answered with a 500 or a crash;
each is now a 400 naming the field."""

from __future__ import annotations

import pytest

from tidegate.protocol.requests import BodyCaps, RequestValidationFailure, check_chat

CAPS = BodyCaps(max_messages=16, max_prompts=16)


@pytest.mark.parametrize("role", [{}, [], ["user"], 3, "superuser"])
def test_a_message_role_of_any_json_type_is_a_400_naming_it(role: object) -> None:
    # {"role": {}} raised TypeError (unhashable) inside the membership test: a 500.
    with pytest.raises(RequestValidationFailure) as failure:
        check_chat({"model": "m", "messages": [{"role": role}]}, CAPS)
    assert failure.value.param == "messages.0.role"
    assert "one of" in failure.value.message
