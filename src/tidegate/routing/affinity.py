"""Affinity keys: which requests should share a replica because they share a KV-cache prefix.

An explicit session id wins. Otherwise the key hashes the request's leading content: for chat,
the leading system message(s) and the first message after them (the conversation's opening,
which every later turn repeats verbatim); for completions, the start of the prompt. Only the
first ``prefix_chars`` characters are read, so long prompts cost no more than short ones.

Why not every message up to ``prefix_chars``: turn two of a conversation appends the answer and
a new question, so a hash over all messages would change between turns whenever the opening is
shorter than ``prefix_chars`` and a conversation would wander between replicas.

Keys are blake2b digests, never Python's per-process randomised ``hash()``: every gateway process
must map a conversation to the same key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

_CHARS_PER_TOKEN = 4
"""Token-id prompts: ids read per ``prefix_chars``, about the characters a token covers."""
_FIELD_END = b"\x1e"
"""Separates hashed fields, so ("ab", "c") and ("a", "bc") give different keys."""


def _digest(h: hashlib.blake2b) -> int:
    return int.from_bytes(h.digest(), "little")


def _new_hash(kind: bytes) -> hashlib.blake2b:
    h = hashlib.blake2b(digest_size=8)
    h.update(kind + _FIELD_END)
    return h


def _content_texts(content: Any) -> Iterator[str]:
    """The text of a message's content: a string, or the text (and image URL) parts."""
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            text = part.get("text")
            if isinstance(text, str):
                yield text
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else None
            if isinstance(url, str):
                yield url


def _opening(messages: list[Any]) -> Iterator[dict[str, Any]]:
    """The leading system/developer messages and the first message after them."""
    for message in messages:
        if not isinstance(message, dict):
            return
        yield message
        if message.get("role") not in ("system", "developer"):
            return


def _chat_key(messages: list[Any], prefix_chars: int) -> int | None:
    h = _new_hash(b"chat")
    left = prefix_chars
    for message in _opening(messages):
        h.update(str(message.get("role", "")).encode() + _FIELD_END)
        for text in _content_texts(message.get("content")):
            piece = text[:left]
            h.update(piece.encode() + _FIELD_END)
            left -= len(piece)
            if left <= 0:
                return _digest(h)
    return _digest(h) if left < prefix_chars else None


def _prompt_key(prompt: Any, prefix_chars: int) -> int | None:
    # A batch of prompts (strings or token lists): the first one stands for the request.
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str) and prompt:
        h = _new_hash(b"text")
        h.update(prompt[:prefix_chars].encode())
        return _digest(h)
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt[:8]):
        ids = prompt[: max(1, prefix_chars // _CHARS_PER_TOKEN)]
        h = _new_hash(b"tokens")
        h.update(",".join(map(str, ids)).encode())
        return _digest(h)
    return None


def affinity_key(
    payload: Mapping[str, Any], *, session_id: str | None, prefix_chars: int
) -> int | None:
    """A stable 64-bit key for ``payload`` (a chat or completions request body), or None when
    there is nothing to hash. ``session_id`` (the x-tidegate-session-id header) wins."""
    if session_id:
        h = _new_hash(b"session")
        h.update(session_id.encode())
        return _digest(h)
    if prefix_chars <= 0:
        return None
    messages = payload.get("messages")
    if isinstance(messages, list):
        return _chat_key(messages, prefix_chars)
    return _prompt_key(payload.get("prompt"), prefix_chars)
