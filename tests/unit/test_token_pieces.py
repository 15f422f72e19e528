"""Counting a prompt piece by piece between added tokens gives the tokenizer's own count, with
recurring pieces answered from a bounded cache; tokenizers whose split depends on context are
counted whole."""

from __future__ import annotations

import random
import re
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, trainers

from tests.support.tiny_model import write_tiny_model
from tidegate.pipeline.token_pieces import PieceCounter

SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im"]
CORPUS = [
    "The gateway counts every prompt with the model's own tokenizer, 1234 times.",
    "Ünïcödé 東京 🙂 tabs\tand\nnewlines  and   spaces",
    "You are a helpful assistant. Say hello to the benchmark.",
]


def byte_level_bpe(*specials: AddedToken | str) -> Tokenizer:
    """A small byte-level BPE tokenizer trained here (the shape of most chat models')."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS * 20, trainer=trainer)
    tokenizer.add_special_tokens(list(specials or SPECIALS))
    return tokenizer


def whole(tokenizer: Tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False))


def test_piece_counts_equal_whole_counts_on_random_texts() -> None:
    tokenizer = byte_level_bpe()
    counter = PieceCounter.for_tokenizer(tokenizer)
    assert counter is not None
    alphabet = [*"ab xy\n\t 09<|>_Üé東🙂.,", *SPECIALS, "<|im_end", " <|im_end|> ", "|>"]
    rnd = random.Random(7)
    for _ in range(3000):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 40)))
        assert counter.count(text) == whole(tokenizer, text), repr(text)
        assert counter.count(text) == whole(tokenizer, text), repr(text)  # from the cache


def test_a_rendered_chat_prompt_counts_as_a_whole_and_caches_its_pieces() -> None:
    tokenizer = byte_level_bpe()
    counter = PieceCounter.for_tokenizer(tokenizer)
    assert counter is not None
    system = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    for turn in range(20):
        text = f"{system}<|im_start|>user\nSay hello {turn}.<|im_end|>\n<|im_start|>assistant\n"
        assert counter.count(text) == whole(tokenizer, text)
    # The system prompt, the newlines and the generation prompt are cached once each.
    assert len(counter) == 20 + 3


def test_the_cache_is_bounded_by_the_text_it_holds() -> None:
    tokenizer = byte_level_bpe()
    alternatives = sorted(SPECIALS, key=len, reverse=True)
    counter = PieceCounter(
        tokenizer=tokenizer,
        splitter=re.compile("(" + "|".join(re.escape(token) for token in alternatives) + ")"),
        max_cached_chars=100,
        max_piece_chars=30,
    )
    for index in range(50):
        piece = f"piece number {index:03d}"  # 16 characters
        assert counter.count(f"<|im_start|>{piece}") == 1 + whole(tokenizer, piece)
    assert len(counter) == 100 // 16
    long_piece = "x" * 31
    counter.count(long_piece)
    assert long_piece not in counter._counts  # longer than max_piece_chars: never cached


def test_context_dependent_tokenizers_are_counted_whole(tmp_path: Path) -> None:
    stripping = byte_level_bpe(AddedToken("<|im_end|>", special=True, rstrip=True))
    assert PieceCounter.for_tokenizer(stripping) is None
    normalized = byte_level_bpe()
    normalized.normalizer = normalizers.NFKC()
    assert PieceCounter.for_tokenizer(normalized) is None
    metaspace = Tokenizer(models.BPE())
    metaspace.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    metaspace.add_special_tokens(SPECIALS)
    assert PieceCounter.for_tokenizer(metaspace) is None
    # The tests' word-level tokenizer splits context-free: counted by pieces.
    tiny = Tokenizer.from_file(str(write_tiny_model(tmp_path / "tiny") / "tokenizer.json"))
    assert PieceCounter.for_tokenizer(tiny) is not None
