"""The built-in checks: deny-lists, patterns, the redactor's PII detectors, size and script.

Each is compiled once from its config and answers ``check(text)``: None to pass, or the reason
to refuse (which never quotes the text). A check that cannot decide raises ``CheckError``, and
its ``on_error`` says whether the text then passes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Literal, Protocol

import regex

from tidegate.config import DenyListCheck, PiiCheck, RegexCheck, ScriptCheck, SizeCheck

__all__ = [
    "Check",
    "CheckError",
    "DenyList",
    "FailureMode",
    "PiiBlock",
    "PiiDetectors",
    "Patterns",
    "ScriptLimit",
    "SizeLimit",
]

FailureMode = Literal["open", "closed"]


class CheckError(Exception):
    """The check could not decide (a timeout, a guard that failed); the message says why."""


class Check(Protocol):
    label: str
    kind: str
    on_error: FailureMode

    def check(self, text: str) -> str | None: ...


class _Finding(Protocol):
    @property
    def family(self) -> str: ...


class _Finder(Protocol):
    def find(self, text: str) -> Sequence[_Finding]: ...


PiiDetectors = Callable[[Sequence[str]], _Finder]
"""The prompt redactor for some families (``pipeline.redaction.Redactor``), handed in by the
app: the detectors live above this package."""


class DenyList:
    """All the terms as one alternation of escaped literals: linear in the text, no
    backtracking to exploit."""

    kind = "deny_list"
    on_error: FailureMode = "closed"

    def __init__(self, config: DenyListCheck) -> None:
        self.label = config.label
        # Longest first, so a phrase wins over a word it starts with.
        terms = sorted({t.strip() for t in config.terms}, key=len, reverse=True)
        body = "|".join(re.escape(term) for term in terms)
        if config.whole_words:
            body = rf"(?<!\w)(?:{body})(?!\w)"
        self._pattern = re.compile(body, 0 if config.case_sensitive else re.IGNORECASE)

    def check(self, text: str) -> str | None:
        return "the text holds a denied term" if self._pattern.search(text) else None


class Patterns:
    """Patterns searched with a shared time limit (the ``regex`` module's timeout)."""

    kind = "regex"

    def __init__(self, config: RegexCheck) -> None:
        self.label = config.label
        self.on_error = config.on_error
        flags = regex.IGNORECASE if config.ignore_case else 0
        # concurrent: the search lets go of the GIL, so a long text checked on a worker thread
        # (gates.OFFLOAD_CHARS) leaves the event loop running.
        self._patterns = [regex.compile(pattern, flags) for pattern in config.patterns]
        self._timeout_s = config.timeout_ms / 1000

    def check(self, text: str) -> str | None:
        deadline = time.perf_counter() + self._timeout_s
        for index, pattern in enumerate(self._patterns):
            left = deadline - time.perf_counter()
            if left <= 0:
                raise CheckError("the patterns ran out of time on this text")
            try:
                found = pattern.search(text, concurrent=True, timeout=left)
            except TimeoutError:
                raise CheckError("the patterns ran out of time on this text") from None
            if found is not None:
                return f"the text matches denied pattern #{index + 1}"
        return None


class PiiBlock:
    """The prompt redactor's detectors, blocking instead of redacting."""

    kind = "pii"
    on_error: FailureMode = "closed"

    def __init__(self, config: PiiCheck, detectors: PiiDetectors) -> None:
        self.label = config.label
        self._finder = detectors(config.families)

    def check(self, text: str) -> str | None:
        findings = self._finder.find(text)
        if not findings:
            return None
        families = sorted({finding.family for finding in findings})
        return f"the text holds personal data or a secret ({', '.join(families)})"


class SizeLimit:
    kind = "size"
    on_error: FailureMode = "closed"

    def __init__(self, config: SizeCheck) -> None:
        self.label = config.label
        self._max = config.max_chars

    def check(self, text: str) -> str | None:
        if len(text) > self._max:
            return f"the text is longer than {self._max} characters"
        return None


class ScriptLimit:
    """Letters outside the allowed scripts, as a share of all letters."""

    kind = "script"
    on_error: FailureMode = "closed"

    def __init__(self, config: ScriptCheck) -> None:
        self.label = config.label
        allowed = "".join(rf"\p{{Script={script}}}" for script in config.allowed_scripts)
        self._letters = regex.compile(r"\p{L}")
        self._foreign = regex.compile(rf"[\p{{L}}--[{allowed}]]", regex.V1)
        self._max_share = config.max_foreign_share
        self._min_letters = config.min_letters
        self._scripts = ", ".join(config.allowed_scripts)

    def check(self, text: str) -> str | None:
        letters = sum(1 for _ in self._letters.finditer(text))
        if letters < self._min_letters:
            return None
        foreign = sum(1 for _ in self._foreign.finditer(text))
        if foreign / letters > self._max_share:
            return f"the text is mostly written outside the allowed scripts ({self._scripts})"
        return None
