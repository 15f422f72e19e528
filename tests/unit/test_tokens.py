from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.tiny_model import write_tiny_model
from tidegate.pipeline.chat_template import ChatTemplate, ChatTemplateError
from tidegate.pipeline.tokens import NoChatTemplateError, PromptCounter


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="test-tokenizer")
    yield pool
    pool.shutdown()


@pytest.fixture
def counter(tmp_path: Path, executor: ThreadPoolExecutor) -> PromptCounter:
    return PromptCounter.from_model_dir(write_tiny_model(tmp_path / "tiny"), executor=executor)


def test_chat_is_rendered_with_the_template_and_special_tokens(counter: PromptCounter) -> None:
    text = counter.render_chat([{"role": "user", "content": "hello world"}])
    assert text == "<s><|im_start|>user\nhello world<|im_end|>\n<|im_start|>assistant\n"
    # <s> <|im_start|> user hello world <|im_end|> <|im_start|> assistant: the template writes the
    # special tokens, so the tokenizer adds none (no second <s>).
    assert counter.count_chat_sync([{"role": "user", "content": "hello world"}]) == 8


async def test_count_chat_and_count_text(counter: PromptCounter) -> None:
    messages = [
        {"role": "system", "content": "fine"},
        {"role": "user", "content": "how are you"},
    ]
    assert await counter.count_chat(messages) == 1 + (1 + 1 + 1 + 1) + (1 + 1 + 3 + 1) + 2
    # Completion prompts get the tokenizer's own special tokens (<s> here), as vLLM adds them.
    assert await counter.count_text("hello world") == 3
    assert await counter.count_text([5, 6, 7, 8]) == 4
    assert await counter.count_prompts(["hello", "how are you"]) == [2, 4]
    assert await counter.count_prompts([[1, 2], [3]]) == [2, 1]
    assert await counter.count_prompts([9, 9, 9]) == [3]


async def test_content_parts_are_joined_like_vllm(counter: PromptCounter) -> None:
    parts = [{"type": "text", "text": "hello"}, {"type": "text", "text": "world"}]
    rendered = counter.render_chat([{"role": "user", "content": parts}])
    assert "user\nhello\nworld<|im_end|>" in rendered


class CountingExecutor(ThreadPoolExecutor):
    """A real thread pool that counts the work handed to it."""

    submitted = 0

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


async def test_long_prompts_are_counted_off_the_event_loop(tmp_path: Path) -> None:
    pool = CountingExecutor(max_workers=1)
    counter = PromptCounter.from_model_dir(
        write_tiny_model(tmp_path / "tiny"), executor=pool, inline_chars=100
    )
    try:
        assert await counter.count_chat([{"role": "user", "content": "hello"}]) == 7
        assert await counter.count_text("hello") == 2
        assert pool.submitted == 0  # short: counted inline, a thread hop costs more
        long_text = " ".join(["hello"] * 1000)
        assert await counter.count_chat([{"role": "user", "content": long_text}]) == 1006
        assert await counter.count_text(long_text) == 1001
        assert pool.submitted == 2
    finally:
        pool.shutdown()


async def test_a_template_refusal_is_a_chat_template_error(counter: PromptCounter) -> None:
    with pytest.raises(ChatTemplateError, match="must start with a user"):
        await counter.count_chat([{"role": "assistant", "content": "hello"}])


async def test_a_model_without_a_template_cannot_count_chats(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    directory = write_tiny_model(tmp_path / "base", chat_template=None)
    counter = PromptCounter.from_model_dir(directory, executor=executor)
    assert not counter.has_chat_template
    with pytest.raises(NoChatTemplateError):
        await counter.count_chat([{"role": "user", "content": "hello"}])
    assert await counter.count_text("hello") == 2


def test_template_helpers_match_transformers_conventions(tmp_path: Path) -> None:
    template = ChatTemplate(
        source=(
            "{{ messages | tojson }}|{{ '<' }}|"
            "{% for m in messages %}{% for part in m['content'] %}{{ part.text }}{% endfor %}"
            "{% endfor %}"
        ),
        special_tokens={},
    )
    assert template.content_as_parts  # the template loops over content: parts are kept
    rendered = template.render([{"role": "user", "content": "é<b>"}])
    # tojson does not escape HTML or non-ASCII characters (transformers overrides Jinja's).
    assert rendered.startswith('[{"role": "user", "content": [{"type": "text", "text": "é<b>"}]}]')
    assert rendered.endswith("|<|é<b>")
    # The sandbox refuses attribute access that could escape it.
    hostile = ChatTemplate(source="{{ ''.__class__.__mro__ }}", special_tokens={})
    with pytest.raises(ChatTemplateError):
        hostile.render([{"role": "user", "content": "x"}])
