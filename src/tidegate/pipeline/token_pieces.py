"""Counting a rendered chat prompt piece by piece, with the counts of recurring pieces cached.

``tokenizers`` first splits a text at its added tokens (``<|im_start|>``, ``<|im_end|>`` ...),
then pre-tokenizes and encodes each piece between them on its own, so a text's token count is
the number of added tokens in it plus the counts of the pieces. A rendered chat prompt is
mostly pieces that recur from request to request (the template's default system prompt, a
client's system prompt, tool definitions, the ``assistant`` generation prompt), so their counts
are cached and only new text is encoded.

That sum is exact only when the split is context-free: no normalizer, and no added token that
strips neighbouring whitespace or matches single words only. ``PieceCounter.for_tokenizer``
returns None for any other tokenizer, which is then counted whole as before.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

from tokenizers import Tokenizer

__all__ = ["PieceCounter"]

# Bounds the cache by text held (about 4 MiB of str), whatever the mix of piece sizes.
_MAX_CACHED_CHARS = 4_000_000
# More added tokens than this (some tokenizers reserve thousands) would make the split regex
# slow: such a tokenizer is counted whole.
_MAX_SPLITTING_TOKENS = 1024
# Longer pieces are encoded every time: they rarely recur, and would crowd out those that do.
_MAX_PIECE_CHARS = 32_768


class PieceCounter:
    def __init__(
        self,
        *,
        tokenizer: Tokenizer,
        splitter: re.Pattern[str],
        max_cached_chars: int = _MAX_CACHED_CHARS,
        max_piece_chars: int = _MAX_PIECE_CHARS,
    ) -> None:
        self._encode = tokenizer.encode
        self._split = splitter.split
        self._counts: dict[str, int] = {}
        self._cached_chars = 0
        self._max_cached_chars = max_cached_chars
        self._max_piece_chars = max_piece_chars
        # Counting also runs in the tokenizer threads (long prompts): inserts and evictions
        # take the lock; lookups need none (a dict read is atomic under the GIL).
        self._lock = threading.Lock()

    @classmethod
    def for_tokenizer(cls, tokenizer: Tokenizer) -> PieceCounter | None:
        """A counter for ``tokenizer``, or None when its split is not context-free."""
        tokens = _splitting_tokens(json.loads(tokenizer.to_str()))
        if tokens is None:
            return None
        # Longest first: at one position the regex takes the first alternative that matches,
        # which is then the longest, as the tokenizer's leftmost-longest matcher does.
        splitter = re.compile("(" + "|".join(re.escape(token) for token in tokens) + ")")
        counter = cls(tokenizer=tokenizer, splitter=splitter)
        # A last guard against a split rule missed above: the sum must match a whole count.
        probe = _PROBE + _PROBE.join(tokens[:64]) + _PROBE
        whole = len(tokenizer.encode(probe, add_special_tokens=False))
        if counter.count(probe) != whole:
            return None
        counter._forget()
        return counter

    def count(self, text: str) -> int:
        """Tokens of ``text`` encoded without special tokens added (as a chat prompt is)."""
        # With one capturing group, split() alternates piece, added token, piece ... .
        parts = self._split(text)
        total = len(parts) >> 1  # the added tokens: one id each
        counts = self._counts
        for piece in parts[::2]:
            if not piece:
                continue
            count = counts.get(piece)
            if count is None:
                count = len(self._encode(piece, add_special_tokens=False))
                if len(piece) <= self._max_piece_chars:
                    self._remember(piece, count)
            total += count
        return total

    def __len__(self) -> int:
        return len(self._counts)

    def _forget(self) -> None:
        with self._lock:
            self._counts.clear()
            self._cached_chars = 0

    def _remember(self, piece: str, count: int) -> None:
        with self._lock:
            if piece in self._counts:
                return
            self._counts[piece] = count
            self._cached_chars += len(piece)
            # Oldest first (dicts keep insertion order): a plain FIFO, so a hit costs no update.
            while self._cached_chars > self._max_cached_chars:
                oldest = next(iter(self._counts))
                del self._counts[oldest]
                self._cached_chars -= len(oldest)


_PROBE = " Hello,\n world 12 \u00fc "


def _uses_metaspace(node: Any) -> bool:
    # Metaspace may prepend its space to the first piece only: counts would depend on position.
    if isinstance(node, dict):
        return node.get("type") == "Metaspace" or any(_uses_metaspace(v) for v in node.values())
    if isinstance(node, list):
        return any(_uses_metaspace(item) for item in node)
    return False


def _splitting_tokens(config: dict[str, Any]) -> list[str] | None:
    """The added tokens, longest first; None when pieces cannot be counted on their own."""
    if config.get("normalizer") is not None or _uses_metaspace(config.get("pre_tokenizer")):
        return None
    contents: set[str] = set()
    for token in config.get("added_tokens") or []:
        if token.get("lstrip") or token.get("rstrip") or token.get("single_word"):
            return None
        content = token.get("content")
        if not isinstance(content, str) or not content:
            return None
        contents.add(content)
    if len(contents) > _MAX_SPLITTING_TOKENS:
        return None
    return sorted(contents, key=len, reverse=True) or None
