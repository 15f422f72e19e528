"""PII and secret redaction for logged prompts and completions.

``Redactor.redact`` replaces each finding with a typed placeholder: ``[EMAIL]``, ``[PHONE]``,
``[CARD]``, ``[NATIONAL_ID]``, ``[IP]``, ``[SECRET]``. Every family scans the original text once
with compiled regexes (``redaction_patterns``); overlapping findings are resolved by family
priority (secrets first), then the text is rebuilt in one pass. Recall and precision are
measured on ``tests/data/redaction_corpus.jsonl``.

``scan_for_secrets`` answers "does this text hold a credential?" for tests that grep every sink
for planted keys.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass

from tidegate.pipeline.redaction_patterns import FINDERS, Finder, find_secrets

__all__ = ["FAMILIES", "Finding", "Redactor", "scan_for_secrets"]

FAMILIES: tuple[str, ...] = tuple(name for name, _ in FINDERS)
# Each pass uncovers findings that were glued to one redacted by the pass before.
_MAX_PASSES = 8


@dataclass(frozen=True, slots=True)
class Finding:
    family: str
    start: int
    end: int


class Redactor:
    def __init__(self, *, families: Iterable[str] = FAMILIES) -> None:
        wanted = set(families)
        unknown = wanted - set(FAMILIES)
        if unknown:
            raise ValueError(f"unknown redaction families: {sorted(unknown)}; known: {FAMILIES}")
        self._finders: tuple[tuple[str, Finder], ...] = tuple(
            (name, finder) for name, finder in FINDERS if name in wanted
        )

    def find(self, text: str) -> list[Finding]:
        """Non-overlapping findings in text order."""
        starts: list[int] = []
        accepted: list[Finding] = []
        for family, finder in self._finders:
            # Longest first within a family, so a full number beats a fragment of it.
            spans = sorted(set(finder(text)), key=lambda span: (span[0] - span[1], span[0]))
            for start, end in spans:
                if start >= end:
                    continue
                index = bisect.bisect_left(starts, start)
                if index > 0 and accepted[index - 1].end > start:
                    continue
                if index < len(accepted) and accepted[index].start < end:
                    continue
                starts.insert(index, start)
                accepted.insert(index, Finding(family, start, end))
        return accepted

    def redact(self, text: str) -> str:
        """Replace every finding, repeating until nothing more is found: a finding glued to the
        one before it (``+44 20 7946 0958+44 20 7946 0959``) only becomes visible to the
        patterns' boundary checks once its neighbour is a placeholder. Bounded, since each
        pass that changes anything replaces at least one finding with a shorter placeholder
        or leaves the text as it is."""
        for _ in range(_MAX_PASSES):
            redacted = self._redact_once(text)
            if redacted is text:
                return text
            text = redacted
        return text

    def _redact_once(self, text: str) -> str:
        findings = self.find(text)
        if not findings:
            return text
        parts: list[str] = []
        position = 0
        for finding in findings:
            parts.append(text[position : finding.start])
            parts.append(f"[{finding.family}]")
            position = finding.end
        parts.append(text[position:])
        return "".join(parts)


def scan_for_secrets(text: str) -> bool:
    """Whether ``text`` holds an API key, bearer token or other credential."""
    return next(find_secrets(text), None) is not None
