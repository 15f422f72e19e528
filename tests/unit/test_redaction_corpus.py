"""Recall and precision of the redactor on the labelled corpus in tests/data.

A labelled span is found when a finding of the same family covers it exactly; anything else
the redactor reports is a false positive. The per-family figures are printed (pytest -s) so a
change to the patterns shows what it costs.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from tidegate.pipeline.redaction import FAMILIES, Redactor

CORPUS = Path(__file__).parent.parent / "data" / "redaction_corpus.jsonl"
MIN_RECALL = 0.99
MIN_PRECISION = 0.95


@dataclass
class Tally:
    labelled: Counter[str]
    found: Counter[str]
    reported: Counter[str]
    correct: Counter[str]
    misses: list[str]
    false_positives: list[str]


def _labelled_spans(text: str, spans: list[dict[str, str]]) -> set[tuple[str, int, int]]:
    located: set[tuple[str, int, int]] = set()
    cursor: dict[str, int] = {}
    for span in spans:
        value = span["text"]
        start = text.index(value, cursor.get(value, 0))
        cursor[value] = start + 1
        located.add((span["family"], start, start + len(value)))
    return located


@pytest.fixture(scope="module")
def tally() -> Tally:
    redactor = Redactor()
    result = Tally(Counter(), Counter(), Counter(), Counter(), [], [])
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        case = json.loads(line)
        text = case["text"]
        expected = _labelled_spans(text, case["spans"])
        predicted = {(f.family, f.start, f.end) for f in redactor.find(text)}
        for family, start, end in expected:
            result.labelled[family] += 1
            if (family, start, end) in predicted:
                result.found[family] += 1
            else:
                result.misses.append(f"{family}: {text[start:end]!r} in {text!r}")
        for family, start, end in predicted:
            result.reported[family] += 1
            if (family, start, end) in expected:
                result.correct[family] += 1
            else:
                result.false_positives.append(f"{family}: {text[start:end]!r} in {text!r}")
    return result


def test_corpus_covers_every_family_and_has_negatives() -> None:
    lines = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]
    per_family = Counter(span["family"] for line in lines for span in line["spans"])
    assert set(per_family) == set(FAMILIES)
    assert sum(per_family.values()) >= 200
    assert min(per_family.values()) >= 25
    assert sum(1 for line in lines if not line["spans"]) >= 50


def test_recall_and_precision(tally: Tally) -> None:
    for family in FAMILIES:
        recall = tally.found[family] / tally.labelled[family]
        precision = tally.correct[family] / max(tally.reported[family], 1)
        print(
            f"{family:12} recall {recall:.3f} ({tally.found[family]}/{tally.labelled[family]})"
            f"  precision {precision:.3f} ({tally.correct[family]}/{tally.reported[family]})"
        )
    recall = sum(tally.found.values()) / sum(tally.labelled.values())
    precision = sum(tally.correct.values()) / sum(tally.reported.values())
    print(f"{'overall':12} recall {recall:.3f}  precision {precision:.3f}")
    assert recall >= MIN_RECALL, "missed:\n" + "\n".join(tally.misses)
    assert precision >= MIN_PRECISION, "false positives:\n" + "\n".join(tally.false_positives)


def test_every_family_meets_the_recall_target(tally: Tally) -> None:
    for family in FAMILIES:
        assert tally.found[family] / tally.labelled[family] >= MIN_RECALL, "missed:\n" + "\n".join(
            m for m in tally.misses if m.startswith(family)
        )
