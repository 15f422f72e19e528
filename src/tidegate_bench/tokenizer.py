"""The target model's tokenizer, when one is at hand, for sizing prompts and counting tokens.

Accepts a ``tokenizer.json`` file or a model directory holding one (the same file the gateway's
validator reads). Without one, a whitespace word stands in for a token: it is what the fake
upstream counts, and close enough for sizing against a server whose tokenizer is unknown.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

# Common short English words: mostly one token each in BPE vocabularies.
WORDS = (
    "the of and to in is was for on that with as by at from his it an were are which this be "
    "or has had not first one their its new after who they have her she two been other when "
    "there all during into school time may years more most only over city some world would "
    "where later up such used many can state about national out known university united then "
    "made season river team through before him family also between three part well water"
).split()


class TokenCounter:
    def __init__(self, tokenizer: Tokenizer | None) -> None:
        if tokenizer is not None:
            tokenizer.no_truncation()
            tokenizer.no_padding()
        self._tokenizer = tokenizer

    @classmethod
    def load(cls, path: Path | None) -> TokenCounter:
        if path is None:
            return cls(None)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"no tokenizer.json at {path}")
        return cls(Tokenizer.from_file(str(file)))

    @property
    def exact(self) -> bool:
        """True when counts come from the model's tokenizer, not whitespace words."""
        return self._tokenizer is not None

    def count(self, text: str) -> int:
        if self._tokenizer is None:
            return len(text.split())
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def text(self, tokens: int, rng: np.random.Generator) -> str:
        """Random words making about ``tokens`` tokens (exactly that many words without a
        tokenizer; with one, the first ``tokens`` ids of a longer random text, decoded)."""
        words = rng.choice(len(WORDS), size=max(tokens, 1))
        text = " ".join(WORDS[i] for i in words[:tokens])
        if self._tokenizer is None or tokens <= 0:
            return text
        ids = self._tokenizer.encode(text, add_special_tokens=False).ids[:tokens]
        return str(self._tokenizer.decode(ids))
