"""The built-in content-safety checks, the policy config's validation, the texts they read, the
guard's answer parsing, and the stream gate's window, hold and cut on synthetic streams."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncGenerator
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from tidegate.config import (
    ClassifierCheck,
    DenyListCheck,
    PiiCheck,
    RegexCheck,
    SafetyConfig,
    ScriptCheck,
    SizeCheck,
)
from tidegate.errors import ContentPolicyError, ContentPolicyUnavailableError
from tidegate.observability.capture import ResponseCapture
from tidegate.observability.records import RequestRecord
from tidegate.pipeline.redaction import Redactor
from tidegate.protocol.sse import DONE_EVENT
from tidegate.routing.replicas import RoutingTable
from tidegate.safety.checks import (
    CheckError,
    DenyList,
    Patterns,
    PiiBlock,
    ScriptLimit,
    SizeLimit,
)
from tidegate.safety.classifier import Classifier, GuardPool
from tidegate.safety.gates import OFFLOAD_CHARS, SafetyGates
from tidegate.safety.metrics import SafetyMetrics
from tidegate.safety.text import answer_texts, request_text


def _redactor(families: Any) -> Redactor:
    return Redactor(families=families)


def test_deny_list_matches_whole_words_in_any_case_and_never_quotes_the_text() -> None:
    check = DenyList(DenyListCheck(kind="deny_list", terms=["ban", "bad phrase"]))
    assert check.check("please BAN this") == "the text holds a denied term"
    assert check.check("a Bad  phrase") is None  # literal: two spaces are not one
    assert check.check("a bad phrase, really") is not None
    assert check.check("banana") is None
    loose = DenyList(
        DenyListCheck(kind="deny_list", terms=["ban"], whole_words=False, case_sensitive=True)
    )
    assert loose.check("banana") is not None and loose.check("BANANA") is None
    # Regex metacharacters in terms are literals.
    literal = DenyList(DenyListCheck(kind="deny_list", terms=["a.b(c"]))
    assert literal.check("xa.b(c y") is None and literal.check("a.b(c") is not None
    assert literal.check("axb(c") is None


def test_patterns_refuse_matches_and_stop_a_catastrophic_search_in_time() -> None:
    check = Patterns(RegexCheck(kind="regex", patterns=[r"ORD-\d{6}", r"(?i)secret plan"]))
    assert check.check("order ORD-123456") == "the text matches denied pattern #1"
    assert check.check("the SECRET plan") == "the text matches denied pattern #2"
    assert check.check("ORD-12") is None
    nested = Patterns(RegexCheck(kind="regex", patterns=[r"(a+)+$"], timeout_ms=10))
    assert nested.on_error == "closed"
    started = time.perf_counter()
    with pytest.raises(CheckError, match="ran out of time"):
        nested.check("a" * 5000 + "!")
    assert time.perf_counter() - started < 5  # unbounded, this runs for ages
    lenient = Patterns(
        RegexCheck(kind="regex", patterns=[r"(a+)+$"], timeout_ms=10, on_error="open")
    )
    assert lenient.on_error == "open"


def test_pii_blocks_with_the_redactors_detectors_and_names_only_the_families() -> None:
    check = PiiBlock(PiiCheck(kind="pii", families=["EMAIL", "CARD"]), _redactor)
    reason = check.check("write to jane.doe@example.com or pay with 4111 1111 1111 1111")
    assert reason == "the text holds personal data or a secret (CARD, EMAIL)"
    assert "jane" not in (reason or "")
    assert check.check("call +44 20 7946 0958") is None  # PHONE is not among its families
    everything = PiiBlock(PiiCheck(kind="pii"), _redactor)
    assert "SECRET" in (everything.check("key sk-proj-abcdefghijklmnop1234") or "")
    assert everything.check("nothing personal here") is None


def test_size_and_script_limits() -> None:
    size = SizeLimit(SizeCheck(kind="size", max_chars=10))
    assert size.check("x" * 10) is None
    assert size.check("x" * 11) == "the text is longer than 10 characters"
    latin = ScriptLimit(ScriptCheck(kind="script", allowed_scripts=["Latin"], min_letters=5))
    assert latin.check("Bonjour, ça va très bien aujourd'hui") is None
    assert "allowed scripts (Latin)" in (latin.check("Привет, как дела сегодня") or "")
    assert latin.check("Привет") is None or latin.check("При") is None  # short texts pass
    assert latin.check("Да") is None
    # A few foreign words in a Latin text stay under max_foreign_share.
    assert latin.check("The word for peace in Russian is мир, said the teacher today") is None
    both = ScriptLimit(ScriptCheck(kind="script", allowed_scripts=["Latin", "Cyrillic"]))
    assert both.check("Привет, как дела сегодня, мой друг") is None
    assert both.check("你好，今天天气很好，我们去公园散步吧，好不好呢朋友们") is not None
    # Digits, punctuation and emoji are not letters: they never count.
    assert latin.check("1234567890 !!! 🙂🙂🙂🙂🙂🙂") is None


@pytest.mark.parametrize(
    ("section", "says"),
    [
        ({"policies": {"p": {"input": [{"kind": "regex", "patterns": ["(unclosed"]}]}}}, "compile"),
        ({"policies": {"p": {"input": [{"kind": "script", "allowed_scripts": ["Klingon"]}]}}}, ""),
        ({"policies": {"p": {"input": [{"kind": "deny_list", "terms": [" "]}]}}}, "blank"),
        ({"policies": {"p": {"input": [{"kind": "deny_list", "terms": []}]}}}, ""),
        ({"policies": {"p": {"input": [{"kind": "pii", "families": ["DNA"]}]}}}, ""),
        ({"policies": {"p": {"input": [{"kind": "size", "max_chars": 1}] * 2}}}, "distinct"),
        ({"policies": {"p": {"input": [{"kind": "nope"}]}}}, ""),
        ({"policies": {"p": {"input": [{"kind": "classifier"}]}}}, "needs the gateway pool"),
        (
            {
                "policies": {
                    "p": {"input": [{"kind": "classifier", "protocol": "openai_moderation"}]}
                }
            },
            "http(s) url",
        ),
        ({"policies": {"Bad Name": {}}}, "policy name"),
        ({"policies": {}, "models": {"m": "missing"}}, "do not exist"),
        ({"policies": {"p": {"input": [{"kind": "size", "max_chars": 1, "name": "A B"}]}}}, ""),
    ],
)
def test_bad_policies_are_refused_at_load(section: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(says) if says else None):
        SafetyConfig.model_validate(section)


def test_the_texts_checked() -> None:
    chat = {
        "messages": [
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "x"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"function": {"name": "f", "arguments": '{"a": 1}'}}, "junk"],
            },
            "not a message",
        ]
    }
    assert request_text(chat) == 'be nice\npart one\n{"a": 1}'
    assert request_text({"prompt": ["one", "two", 3]}) == "one\ntwo"
    assert request_text({"prompt": [1, 2, 3]}) == ""
    assert request_text({"prompt": "only"}) == "only"
    body = {
        "choices": [
            {"message": {"content": "a"}},
            {"text": "b"},
            {"message": {"content": None}},
            "junk",
        ]
    }
    assert answer_texts(body) == ["a", "b"]
    called = {
        "choices": [
            {
                "message": {
                    "content": "calling",
                    "tool_calls": [{"function": {"name": "f", "arguments": '{"to": "x@y.io"}'}}],
                }
            }
        ]
    }
    assert answer_texts(called) == ['calling\n{"to": "x@y.io"}']
    assert answer_texts(None) == [] and answer_texts({"choices": "x"}) == []


def _guard(categories: list[str] | None = None) -> GuardPool:
    config = ClassifierCheck(kind="classifier", pool="guard", categories=categories or [])
    return GuardPool(config, RoutingTable(), {})


def _answer(text: Any) -> dict[str, Any]:
    return {"choices": [{"message": {"content": text}}]}


def test_the_guards_answers() -> None:
    guard = _guard()
    assert guard._verdict(_answer("safe")) is None
    assert guard._verdict(_answer("  Safe\n")) is None
    assert guard._verdict(_answer("unsafe\nS1,S10")) == (
        "the guard model classified the text unsafe (S1, S10)"
    )
    assert guard._verdict(_answer("unsafe")) == "the guard model classified the text unsafe"
    for broken in (_answer("maybe"), _answer(None), {"choices": []}, None, _answer("")):
        with pytest.raises(CheckError):
            guard._verdict(broken)
    only_s10 = _guard(["s10"])
    assert only_s10._verdict(_answer("unsafe\nS1")) is None
    assert only_s10._verdict(_answer("unsafe\nS1, S10")) is not None


async def test_an_unknown_guard_pool_cannot_decide() -> None:
    with pytest.raises(CheckError, match="does not exist"):
        await _guard().classify("hi", prompt=None, request_id="r1")


class _StubClassifier:
    """A classifier answering from a table, to test the gate's failure modes without HTTP."""

    kind = "classifier"

    def __init__(self, label: str, on_error: Any, answer: str | None | Exception) -> None:
        self.label = label
        self.on_error = on_error
        self.answer = answer
        self.seen: list[tuple[str, str | None]] = []

    async def classify(self, text: str, *, prompt: str | None, request_id: str) -> str | None:
        self.seen.append((text, prompt))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def _gates(
    policies: dict[str, Any], classifiers: dict[str, _StubClassifier] | None = None
) -> tuple[SafetyGates, CollectorRegistry]:
    registry = CollectorRegistry()
    config = SafetyConfig.model_validate({"policies": policies, "models": {"m": "model-policy"}})

    def classifier(check: ClassifierCheck) -> Classifier:
        assert classifiers is not None
        return classifiers[check.label]

    gates = SafetyGates(
        config, metrics=SafetyMetrics(registry), pii=_redactor, classifier=classifier
    )
    return gates, registry


def _count(registry: CollectorRegistry, **labels: str) -> float:
    value = registry.get_sample_value("tidegate_safety_decisions_total", labels)
    return value or 0.0


def _record() -> RequestRecord:
    return RequestRecord(request_id="req-1", route="chat")


async def test_the_model_and_the_tenant_policies_both_apply() -> None:
    deny = {"kind": "deny_list", "terms": ["alpha"]}
    gates, registry = _gates(
        {
            "model-policy": {"input": [deny]},
            "tenant-policy": {"input": [{**deny, "terms": ["beta"]}]},
        }
    )
    assert gates.gate("other-model", None) is None  # nothing to pay
    both = gates.gate("m", "tenant-policy")
    assert both is not None
    for text in ("alpha", "beta"):
        with pytest.raises(ContentPolicyError) as refused:
            await both.check_input({"prompt": text}, _record())
        assert refused.value.code == "content_policy_violation"
    await both.check_input({"prompt": "gamma"}, _record())
    tenant_only = gates.gate("other-model", "tenant-policy")
    assert tenant_only is not None
    await tenant_only.check_input({"prompt": "alpha"}, _record())
    assert (
        _count(registry, policy="model-policy", check="deny_list", stage="input", outcome="block")
        == 1
    )
    assert (
        _count(registry, policy="tenant-policy", check="deny_list", stage="input", outcome="pass")
        == 2
    )


async def test_a_long_text_is_checked_off_the_event_loop() -> None:
    gates, _ = _gates(
        {
            "model-policy": {
                "input": [
                    {"kind": "pii", "families": ["EMAIL"]},
                    {"kind": "regex", "patterns": [r"(a+)+$"], "timeout_ms": 50},
                ]
            }
        }
    )
    gate = gates.gate("m", None)
    assert gate is not None
    long = "plain words here " * (OFFLOAD_CHARS // 8)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        with pytest.raises(ContentPolicyError, match=r"\(EMAIL\)"):
            await gate.check_input({"prompt": long + " write to a@example.com"}, _record())
        with pytest.raises(ContentPolicyError, match="could not decide"):
            await gate.check_input({"prompt": "a" * (OFFLOAD_CHARS + 10) + "!"}, _record())
    finally:
        task.cancel()
    assert ticks > 0  # the loop ran while the checks did


async def test_classifier_failures_follow_on_error_and_output_guards_see_the_prompt() -> None:
    down = _StubClassifier("closed-guard", "closed", CheckError("the guard is down"))
    lenient = _StubClassifier("open-guard", "open", CheckError("the guard is down"))
    judge = _StubClassifier("judge", "closed", "the guard model classified the text unsafe")
    gates, registry = _gates(
        {
            "model-policy": {"input": [{"kind": "classifier", "name": "open-guard", "pool": "g"}]},
            "strict": {"input": [{"kind": "classifier", "name": "closed-guard", "pool": "g"}]},
            "judged": {"output": [{"kind": "classifier", "name": "judge", "pool": "g"}]},
        },
        {"closed-guard": down, "open-guard": lenient, "judge": judge},
    )
    gate = gates.gate("m", None)
    assert gate is not None
    await gate.check_input({"prompt": "hi"}, _record())  # fails open
    strict = gates.gate("other", "strict")
    assert strict is not None
    record = _record()
    with pytest.raises(ContentPolicyUnavailableError, match="could not decide .the guard is down."):
        await strict.check_input({"prompt": "hi"}, record)
    assert record.safety == "input:strict/closed-guard"
    judged = gates.gate("other", "judged")
    assert judged is not None and judged.checks_output
    await judged.check_input({"prompt": "the question"}, _record())
    record = _record()
    filtered = await judged.check_answer(
        {
            "id": "x",
            "choices": [{"index": 0, "message": {"content": "bad"}, "finish_reason": "stop"}],
        },
        record,
    )
    assert judge.seen == [("bad", "the question")]
    assert filtered["id"] == "x"
    [choice] = filtered["choices"]
    assert choice["finish_reason"] == "content_filter" and choice["message"]["content"] is None
    assert "output check 'judge' (classifier)" in choice["message"]["refusal"]
    assert record.outcome == "validation" and record.safety == "output:judged/judge"
    assert (
        _count(
            registry, policy="model-policy", check="open-guard", stage="input", outcome="error_open"
        )
        == 1
    )
    assert (
        _count(
            registry, policy="strict", check="closed-guard", stage="input", outcome="error_closed"
        )
        == 1
    )


def _chunk(text: str) -> bytes:
    event = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return b"data: " + orjson.dumps(event) + b"\n\n"


async def _relay(
    capture: ResponseCapture, pieces: list[tuple[float, str]]
) -> AsyncGenerator[bytes, None]:
    """What the relay does, reduced: each piece's text into the capture, the bytes out."""
    for delay, text in pieces:
        if delay:
            await asyncio.sleep(delay)
        capture.texts.append(text)
        yield _chunk(text)
    yield DONE_EVENT


async def _stream_through(
    policy: dict[str, Any], pieces: list[tuple[float, str]]
) -> tuple[list[tuple[float, bytes]], RequestRecord]:
    gates, _ = _gates({"model-policy": policy})
    gate = gates.gate("m", None)
    assert gate is not None
    record = _record()
    record.capture = ResponseCapture()
    guarded = gate.guard_stream(_relay(record.capture, pieces), record)
    started = time.perf_counter()
    out = []
    async for piece in guarded:
        out.append((time.perf_counter() - started, piece))
    return out, record


async def test_a_stream_term_split_across_chunks_is_cut_before_it_goes_out() -> None:
    pieces = [(0, "all "), (0, "fine "), (0, "forb"), (0, "idden"), (0, " more")]
    # Every chunk checked on its own: the window still sees the term across the chunks, so
    # the chunk completing it never goes out (its harmless first half did).
    policy: dict[str, Any] = {
        "output": [{"kind": "deny_list", "terms": ["forbidden"]}],
        "hold_chars": 0,
        "window_chars": 64,
    }
    out, record = await _stream_through(policy, pieces)
    sent = b"".join(piece for _, piece in out)
    assert b"all " in sent and b"fine " in sent
    assert b"idden" not in sent and b" more" not in sent
    assert b"content_policy_violation" in sent and out[-1][1] is DONE_EVENT
    assert record.safety == "output:model-policy/deny_list"
    assert record.completion_tokens == 4  # the chunks generated before the cut
    # Held until 16 characters can be checked together: no part of the term goes out.
    out, _ = await _stream_through({**policy, "hold_chars": 16}, pieces)
    sent = b"".join(piece for _, piece in out)
    assert b"forb" not in sent and b"content_policy_violation" in sent


async def test_a_held_chunk_goes_out_within_max_hold() -> None:
    policy = {
        "output": [{"kind": "deny_list", "terms": ["forbidden"]}],
        "hold_chars": 1000,  # never reached by these chunks
        "max_hold_ms": 50,
    }
    pieces = [(0, "first"), (1.0, "second")]
    out, record = await _stream_through(policy, pieces)
    assert out[0][1] == _chunk("first")
    # Released by the hold bound (50 ms), not by the next chunk (1 s); the margin is for a
    # loaded test machine.
    assert out[0][0] < 0.7
    assert out[-1][1] is DONE_EVENT and record.safety is None
    assert b"".join(p for _, p in out if p is not DONE_EVENT) == _chunk("first") + _chunk("second")


async def test_chunks_are_released_together_once_hold_chars_are_checked() -> None:
    policy = {"output": [{"kind": "size", "max_chars": 10_000}], "hold_chars": 8}
    pieces = [(0, "ab"), (0, "cd"), (0, "efgh"), (0, "ij")]
    out, _ = await _stream_through(policy, pieces)
    assert [piece for _, piece in out] == [
        _chunk("ab") + _chunk("cd") + _chunk("efgh"),
        _chunk("ij"),
        DONE_EVENT,
    ]


async def test_streamed_tool_call_arguments_are_checked_too() -> None:
    gates, _ = _gates(
        {"model-policy": {"output": [{"kind": "pii", "families": ["EMAIL"]}], "hold_chars": 0}}
    )
    gate = gates.gate("m", None)
    assert gate is not None
    record = _record()
    capture = record.capture = ResponseCapture()

    async def relay() -> AsyncGenerator[bytes, None]:
        for piece in ('{"to": "jane', ".doe@exam", 'ple.com"}'):
            capture.tool_calls.setdefault(0, ["send_mail"]).append(piece)
            yield b"data: {}\n\n"  # the bytes do not matter here: the capture is what is read
        yield DONE_EVENT

    out = [piece async for piece in gate.guard_stream(relay(), record)]
    assert b"content_policy_violation" in out[-2] and out[-1] is DONE_EVENT
    assert record.safety == "output:model-policy/pii"
