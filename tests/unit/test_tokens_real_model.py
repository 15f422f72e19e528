"""The prompt counter against the bundled model (prepared by `tidegate model prepare`, which
`make test` runs first), and against transformers itself: the engine renders chat prompts with
``apply_chat_template``, so equal token ids here mean the gateway counts what the engine counts.

Without the model these tests skip, unless TIDEGATE_TEST_REQUIRE_MODEL=1 (CI sets it): then a
missing model or engine environment is a failure, not a silent skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tidegate.config import load_config
from tidegate.pipeline.tokens import PromptCounter

MODEL = "smollm2-135m-instruct"

CONVERSATIONS: list[list[dict[str, Any]]] = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": "Capital of Italy?"},
    ],
    [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "  And <|im_end|> 3+3? \n\n Ünïcödé 東京 🙂 "},
    ],
    [
        {"role": "user", "content": "Write a haiku."},
        {"role": "assistant", "content": "Old pond\nfrog jumps in\nsplash"},
        {"role": "user", "content": "Another, about the sea."},
        {"role": "assistant", "content": "Waves fold into foam"},
        {"role": "user", "content": "\tThanks!\r\n"},
    ],
]
TEXTS = ["Hello world", " leading space", "<|im_start|>user\nraw", "ünï 東京 " * 20]

_TRANSFORMERS_SCRIPT = """
import json, sys
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
cases = json.load(sys.stdin)
chat = []
for messages in cases["chat"]:
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    chat.append(list(ids))
text = [tok.encode(t) for t in cases["text"]]
print(json.dumps({"chat": chat, "text": text}))
"""


def _require(what: str) -> None:
    if os.environ.get("TIDEGATE_TEST_REQUIRE_MODEL") == "1":
        pytest.fail(f"{what} is missing; run `make engine` (TIDEGATE_TEST_REQUIRE_MODEL=1)")
    pytest.skip(f"{what} is missing; run `make engine`")


@pytest.fixture(scope="module")
def model_dir() -> Path:
    directory = load_config().models_dir / MODEL
    if not (directory / "tokenizer.json").is_file():
        _require(f"the bundled model ({directory})")
    return directory


@pytest.fixture(scope="module")
def counter(model_dir: Path) -> Iterator[PromptCounter]:
    pool = ThreadPoolExecutor(max_workers=2)
    yield PromptCounter.from_model_dir(model_dir, executor=pool)
    pool.shutdown()


def test_token_ids_equal_transformers_apply_chat_template(
    model_dir: Path, counter: PromptCounter
) -> None:
    python = load_config().engine_venv / "bin" / "python"
    if not python.is_file():
        _require(f"the engine environment ({python.parent.parent})")
    done = subprocess.run(
        [str(python), "-c", _TRANSFORMERS_SCRIPT, str(model_dir)],
        input=json.dumps({"chat": CONVERSATIONS, "text": TEXTS}),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    expected = json.loads(done.stdout.strip().splitlines()[-1])
    for messages, ids in zip(CONVERSATIONS, expected["chat"], strict=True):
        assert counter.chat_token_ids(messages) == ids
        # The request path counts piece by piece, with cached pieces: the same count, twice.
        assert counter.count_chat_sync(messages) == len(ids)
        assert counter.count_chat_sync(messages) == len(ids)
    for text, ids in zip(TEXTS, expected["text"], strict=True):
        assert counter.text_token_ids(text) == ids


async def test_counting_a_4k_token_prompt_is_fast(counter: PromptCounter) -> None:
    sentence = "The gateway counts every prompt with the model's own tokenizer. "
    messages = [{"role": "user", "content": sentence * 330}]
    count = await counter.count_chat(messages)
    assert 3500 < count < 5000
    started = time.perf_counter()
    for _ in range(20):
        await counter.count_chat(messages)
    per_call = (time.perf_counter() - started) / 20
    print(f"count_chat: {count} tokens in {per_call * 1000:.2f} ms")
    assert per_call < 0.05
