"""The texts the checks read: a request's (every message's content, or the prompt) and an
answer's (each choice's content)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["answer_texts", "request_text"]


def request_text(fields: Mapping[str, Any]) -> str:
    """Every text of the request, one per line: message contents (strings and text parts),
    tool-call arguments, or the prompt (strings; token-id lists carry no text to check)."""
    parts: list[str] = []
    messages = fields.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, Mapping):
                _content(message.get("content"), parts)
                calls = message.get("tool_calls")
                if isinstance(calls, list):
                    for call in calls:
                        function = call.get("function") if isinstance(call, Mapping) else None
                        if isinstance(function, Mapping):
                            _content(function.get("arguments"), parts)
    else:
        _content(fields.get("prompt"), parts)
    return parts[0] if len(parts) == 1 else "\n".join(parts)


def _content(value: Any, parts: list[str]) -> None:
    if isinstance(value, str):
        parts.append(value)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, str):
                parts.append(item)
            elif isinstance(item, Mapping) and isinstance(item.get("text"), str):
                parts.append(item["text"])


def answer_texts(data: Any) -> list[str]:
    """Each choice's text of a whole answer (chat ``message.content`` and its tool calls'
    arguments, or ``text``)."""
    if not isinstance(data, dict):
        return []
    choices = data.get("choices")
    if not isinstance(choices, list):
        return []
    texts = []
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        if isinstance(message, dict):
            parts: list[str] = []
            _content(message.get("content"), parts)
            calls = message.get("tool_calls")
            if isinstance(calls, list):
                for call in calls:
                    function = call.get("function") if isinstance(call, dict) else None
                    if isinstance(function, dict):
                        _content(function.get("arguments"), parts)
            if parts:
                texts.append("\n".join(parts))
        elif isinstance(choice.get("text"), str):
            texts.append(choice["text"])
    return texts
