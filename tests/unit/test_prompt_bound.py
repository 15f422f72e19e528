"""The prompt bound the gateway reserves without a tokenizer is never below a real tokenizer's
count: for any text (hypothesis), with a byte-level BPE and a SentencePiece-style BPE with byte
fallback trained here, and the bundled SmolLM2 tokenizer and chat template when installed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from tidegate.config import ValidationConfig, load_config
from tidegate.pipeline.prompt_bound import PER_MESSAGE, PER_PROMPT, PER_REQUEST, prompt_token_bound
from tidegate.pipeline.tokens import PromptCounter
from tidegate.pipeline.validation import ModelLimits, RequestValidator
from tidegate.protocol.requests import CompletionRequest
from tidegate.tenancy.policy import KeySettings, TenantSettings

CORPUS = [
    "hello world, how are you? Fine, thanks.",
    "Grüße aus München — 東京タワー 🚀 naïve café",
    "def f(x):\n    return x * 2  # code",
]
BUNDLED = load_config().models_dir / "smollm2-135m-instruct"

# Text with every kind of character: ASCII, accents, CJK, emoji, controls, combining marks.
texts = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"]), max_size=200
) | st.sampled_from(CORPUS)


def _byte_level_bpe() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(CORPUS * 20, trainer=trainer)
    return tokenizer


def _sentencepiece_bpe() -> Tokenizer:
    # Metaspace (the "▁" dummy prefix) and byte fallback, as Llama 2 and Mistral's tokenizers.
    tokenizer = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<unk>", *byte_tokens], show_progress=False
    )
    tokenizer.train_from_iterator(CORPUS * 20, trainer=trainer)
    return tokenizer


def _bundled() -> Tokenizer:
    if not (BUNDLED / "tokenizer.json").is_file():
        pytest.skip(f"the bundled model is not installed ({BUNDLED}); run `make engine`")
    return Tokenizer.from_file(str(BUNDLED / "tokenizer.json"))


@pytest.fixture(
    scope="module",
    params=[_byte_level_bpe, _sentencepiece_bpe, _bundled],
    ids=["byte-level-bpe", "sentencepiece-byte-fallback", "smollm2"],
)
def tokenizer(request: pytest.FixtureRequest) -> Tokenizer:
    make: Callable[[], Tokenizer] = request.param
    return make()


@settings(max_examples=150, deadline=None, derandomize=True)
@given(text=texts)
def test_bound_covers_any_text_prompt(tokenizer: Tokenizer, text: str) -> None:
    count = len(tokenizer.encode(text, add_special_tokens=True).ids)
    assert count <= prompt_token_bound({"prompt": text}, chat=False)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(prompts=st.lists(texts, min_size=1, max_size=4))
def test_bound_covers_a_batch_of_prompts(tokenizer: Tokenizer, prompts: list[str]) -> None:
    count = sum(len(tokenizer.encode(p, add_special_tokens=True).ids) for p in prompts)
    assert count <= prompt_token_bound({"prompt": prompts}, chat=False)


@pytest.fixture(scope="module")
def bundled_counter() -> Iterator[PromptCounter]:
    _bundled()
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield PromptCounter.from_model_dir(BUNDLED, executor=pool)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    contents=st.lists(texts, min_size=1, max_size=5),
    system=st.booleans(),
)
def test_bound_covers_the_bundled_chat_template(
    bundled_counter: PromptCounter, contents: list[str], system: bool
) -> None:
    # SmolLM2's template adds a default system prompt when there is none: the per-request
    # allowance covers it.
    roles = ["system"] if system else []
    roles += ["user", "assistant"] * len(contents)
    messages = [{"role": r, "content": c} for r, c in zip(roles, contents, strict=False)]
    count = len(bundled_counter.chat_token_ids(messages))
    assert count <= prompt_token_bound({"messages": messages}, chat=True)


def test_bound_counts_bytes_and_the_allowances() -> None:
    text = "naïve 🚀"  # 6 + 1 + 4 bytes
    assert prompt_token_bound({"prompt": text}, chat=False) == 11 + PER_PROMPT
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": text}]},
    ]
    # Strings only, keys are structure: "system" + "be brief", "user" + "text" + the text.
    expected = 6 + 8 + 4 + 4 + 11 + 2 * PER_MESSAGE + PER_REQUEST
    assert prompt_token_bound({"messages": messages}, chat=True) == expected
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert prompt_token_bound({"messages": messages, "tools": tools}, chat=True) > expected + 1000


async def test_validation_reserves_the_bound_without_a_tokenizer(tmp_path: Path) -> None:
    validator = RequestValidator(
        config=ValidationConfig(), models={"m": ModelLimits(context_length=None, counter=None)}
    )
    payload = {"model": "m", "messages": [{"role": "user", "content": "hello world"}], "n": 2}
    checked = await validator.check(
        "chat", CompletionRequest("chat", payload), TenantSettings(), KeySettings(), "m"
    )
    bound = prompt_token_bound(payload, chat=True)
    assert checked.prompt_tokens is None and checked.prompt_bound == bound
    assert checked.max_tokens is None and checked.sequences == 2
    payload = {"model": "m", "prompt": "hello world", "max_tokens": 5}
    checked = await validator.check(
        "completions",
        CompletionRequest("completions", payload),
        TenantSettings(),
        KeySettings(),
        "m",
    )
    assert checked.prompt_bound == 11 + PER_PROMPT
    assert checked.reserved_tokens == 11 + PER_PROMPT + 5
