"""What a response said, collected only when something needs it (prompt logging, the JSON
validity gate of a rollout, shadow comparison): the text, the finish reason and the tool calls.
Requests nobody watches carry no capture and pay nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class ResponseCapture:
    texts: list[str] = field(default_factory=list)
    """The first choice's text, in pieces as it arrived."""
    finish_reason: str | None = None
    tool_calls: dict[int, list[str]] = field(default_factory=dict)
    """Tool call index → [name, argument pieces...] of the first choice."""

    @property
    def text(self) -> str:
        return "".join(self.texts)

    def tool_call_arguments(self) -> list[tuple[str, str]]:
        """(name, arguments JSON text) per tool call, in index order."""
        return [(parts[0], "".join(parts[1:])) for _, parts in sorted(self.tool_calls.items())]

    def add_stream_choices(self, choices: list[Any]) -> None:
        """One stream event's choices (``delta`` for chat, ``text`` for completions)."""
        self._add(choices, "delta")

    def add_body_choices(self, choices: list[Any]) -> None:
        """A whole response's choices (``message`` for chat, ``text`` for completions)."""
        self._add(choices, "message")

    def _add(self, choices: list[Any], part: str) -> None:
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            chat = choice.get(part)
            text = chat.get("content") if isinstance(chat, dict) else choice.get("text")
            if isinstance(text, str):
                self.texts.append(text)
            if isinstance(chat, dict):
                self._add_tool_calls(chat.get("tool_calls"))
            reason = choice.get("finish_reason")
            if isinstance(reason, str):
                self.finish_reason = reason

    def _add_tool_calls(self, calls: Any) -> None:
        if not isinstance(calls, list):
            return
        for position, call in enumerate(calls):
            if not isinstance(call, dict):
                continue
            index = call.get("index", position)
            parts = self.tool_calls.setdefault(index if isinstance(index, int) else position, [""])
            function = call.get("function")
            if isinstance(function, dict):
                name = function.get("name")
                if isinstance(name, str) and name:
                    parts[0] = name
                arguments = function.get("arguments")
                if isinstance(arguments, str):
                    parts.append(arguments)
