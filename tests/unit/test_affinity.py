from __future__ import annotations

import subprocess
import sys
from typing import Any

from tidegate.routing.affinity import affinity_key

SYSTEM = {"role": "system", "content": "You are a patient maths tutor."}
FIRST = {"role": "user", "content": "What is a prime number?"}


def _chat(*messages: dict[str, Any]) -> dict[str, Any]:
    return {"model": "m", "messages": list(messages)}


def _key(payload: dict[str, Any], prefix_chars: int = 2048, session: str | None = None) -> int:
    key = affinity_key(payload, session_id=session, prefix_chars=prefix_chars)
    assert key is not None
    return key


def test_every_turn_of_a_conversation_has_the_same_key() -> None:
    turn1 = _chat(SYSTEM, FIRST)
    turn2 = _chat(
        SYSTEM,
        FIRST,
        {"role": "assistant", "content": "A number with exactly two divisors."},
        {"role": "user", "content": "Is 1 prime?"},
    )
    assert _key(turn1) == _key(turn2)


def test_conversations_with_different_openings_differ() -> None:
    other_user = _chat(SYSTEM, {"role": "user", "content": "What is a square root?"})
    other_system = _chat({"role": "system", "content": "You are a poet."}, FIRST)
    keys = {_key(_chat(SYSTEM, FIRST)), _key(other_user), _key(other_system)}
    assert len(keys) == 3


def test_only_prefix_chars_are_read() -> None:
    long_system = {"role": "system", "content": "x" * 100}
    a = _chat(long_system, {"role": "user", "content": "one"})
    b = _chat(long_system, {"role": "user", "content": "two"})
    assert _key(a, prefix_chars=50) == _key(b, prefix_chars=50)
    assert _key(a, prefix_chars=200) != _key(b, prefix_chars=200)


def test_field_boundaries_count() -> None:
    a = _chat({"role": "system", "content": "ab"}, {"role": "user", "content": "c"})
    b = _chat({"role": "system", "content": "a"}, {"role": "user", "content": "bc"})
    assert _key(a) != _key(b)


def test_content_parts_hash_like_their_text() -> None:
    parts = {"role": "user", "content": [{"type": "text", "text": "What is a prime number?"}]}
    assert _key(_chat(SYSTEM, parts)) == _key(_chat(SYSTEM, FIRST))


def test_session_id_wins_over_content() -> None:
    a = _key(_chat(SYSTEM, FIRST), session="conv-1")
    b = _key(_chat({"role": "user", "content": "unrelated"}), session="conv-1")
    assert a == b != _key(_chat(SYSTEM, FIRST), session="conv-2")
    assert _key({"model": "m"}, session="conv-1") == a


def test_completions_prompts() -> None:
    text = {"model": "m", "prompt": "Once upon a time" + " there" * 50}
    assert _key(text, prefix_chars=16) == _key({"prompt": "Once upon a time, a fox"}, 16)
    tokens = {"prompt": list(range(100))}
    # Token ids: prefix_chars // 4 ids are read.
    assert _key(tokens, prefix_chars=40) == _key({"prompt": [*range(10), 7, 7]}, 40)
    assert _key({"prompt": [list(range(10))]}, 40) == _key(tokens, 40)
    assert _key({"prompt": ["abc", "def"]}) == _key({"prompt": "abc"})


def test_nothing_to_hash_gives_none() -> None:
    payloads: list[dict[str, Any]] = [
        {"model": "m"},
        {"messages": []},
        {"messages": [{"role": "user", "content": ""}]},
        {"prompt": ""},
        {"prompt": []},
        {"prompt": 5},
    ]
    for payload in payloads:
        assert affinity_key(payload, session_id=None, prefix_chars=2048) is None
    assert affinity_key(_chat(SYSTEM, FIRST), session_id="", prefix_chars=0) is None


# Computed once and written down: a change means every gateway of a fleet that upgrades one at a
# time disagrees with the others about which replica a conversation belongs to.
EXPECTED_CHAT_KEY = 0x3640BBFE463B98B7
EXPECTED_SESSION_KEY = 0x0453776727BCC721


def test_keys_are_fixed_values_across_processes() -> None:
    code = (
        "from tidegate.routing.affinity import affinity_key as k;"
        f"print(k({_chat(SYSTEM, FIRST)!r}, session_id=None, prefix_chars=2048));"
        "print(k({}, session_id='conv-1', prefix_chars=2048))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        env={"PYTHONHASHSEED": "12345"},
    ).stdout.split()
    assert [int(v) for v in out] == [EXPECTED_CHAT_KEY, EXPECTED_SESSION_KEY]
    assert _key(_chat(SYSTEM, FIRST)) == EXPECTED_CHAT_KEY
    assert _key({}, session="conv-1") == EXPECTED_SESSION_KEY
