"""Content-safety gates: named policies of input and output checks, assigned per model here and
per tenant in the tenant's settings (``safety_policy``, set by the operator only)."""

from __future__ import annotations

import os
import re
from typing import Annotated, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator

from tidegate.config.section import Section

__all__ = [
    "PII_FAMILIES",
    "ClassifierCheck",
    "DenyListCheck",
    "PiiCheck",
    "RegexCheck",
    "SafetyCheck",
    "SafetyConfig",
    "SafetyPolicy",
    "ScriptCheck",
    "SizeCheck",
]

FailureMode = Literal["open", "closed"]
PiiFamily = Literal["SECRET", "EMAIL", "NATIONAL_ID", "CARD", "IP", "PHONE"]
PII_FAMILIES: tuple[PiiFamily, ...] = ("SECRET", "EMAIL", "NATIONAL_ID", "CARD", "IP", "PHONE")
"""The redactor's detector families (``pipeline.redaction``), in its priority order."""
_NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
"""Policy and check names are metric label values: short, lower-case, from config only."""


class _Check(Section):
    name: str = Field(default="", pattern=r"^$|" + _NAME)
    """The check's name in errors, metrics and logs. Empty: its kind."""

    @property
    def label(self) -> str:
        return self.name or str(getattr(self, "kind", "check"))


class DenyListCheck(_Check):
    """Refuse a text holding any of the terms."""

    kind: Literal["deny_list"]
    terms: list[str] = Field(min_length=1, max_length=10_000)
    """Words or phrases, matched literally."""
    case_sensitive: bool = False
    """Match the terms' case exactly (default: any case)."""
    whole_words: bool = True
    """Match only at word boundaries (``ban`` does not match ``banana``)."""

    @field_validator("terms")
    @classmethod
    def _non_empty(cls, terms: list[str]) -> list[str]:
        if any(not term.strip() for term in terms):
            raise ValueError("a deny-list term must not be empty or blank")
        return terms


class RegexCheck(_Check):
    """Refuse a text matching any of the patterns (the ``regex`` module's syntax). A search that
    runs past ``timeout_ms`` (a pathological pattern on a hostile text) fails as ``on_error``
    says, so no pattern can hold the event loop longer than that."""

    kind: Literal["regex"]
    patterns: list[str] = Field(min_length=1, max_length=1_000)
    """Patterns in the ``regex`` module's syntax; compiled at start, an invalid one is a config
    error."""
    ignore_case: bool = False
    """Match in any case."""
    timeout_ms: float = Field(default=20.0, gt=0, le=10_000)
    """The longest all the patterns together may search one text."""
    on_error: FailureMode = "closed"
    """When the search times out: let the text through (open) or refuse it (closed)."""

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        import regex  # here, not at the top: every CLI command imports the config

        for pattern in patterns:
            try:
                regex.compile(pattern)
            except regex.error as error:
                raise ValueError(f"pattern {pattern!r} does not compile: {error}") from None
        return patterns


class PiiCheck(_Check):
    """Refuse a text in which the prompt redactor's detectors find personal data or a secret
    (the same patterns that redact logged prompts, used here to block)."""

    kind: Literal["pii"]
    families: list[PiiFamily] = Field(default_factory=lambda: list(PII_FAMILIES), min_length=1)
    """The detector families that refuse: SECRET, EMAIL, NATIONAL_ID, CARD, IP, PHONE."""


class SizeCheck(_Check):
    """Refuse a text longer than ``max_chars`` (the input: every message's text together)."""

    kind: Literal["size"]
    max_chars: int = Field(ge=1)
    """The most characters accepted."""


class ScriptCheck(_Check):
    """A language limit by writing system: refuse a text whose letters are mostly outside the
    allowed Unicode scripts. No language-identification model is loaded: the library-based
    detectors either need numpy (kept off the serving path) or a model download."""

    kind: Literal["script"]
    allowed_scripts: list[str] = Field(min_length=1)
    """Unicode script names (Latin, Cyrillic, Greek, Han, Arabic, Devanagari ...)."""
    max_foreign_share: float = Field(default=0.2, ge=0, lt=1)
    """The share of letters outside the allowed scripts above which the text is refused."""
    min_letters: int = Field(default=20, ge=1)
    """Texts with fewer letters pass (too short to judge)."""

    @field_validator("allowed_scripts")
    @classmethod
    def _known(cls, scripts: list[str]) -> list[str]:
        import regex

        for script in scripts:
            if not re.fullmatch(r"[A-Za-z_]{2,40}", script):
                raise ValueError(f"{script!r} is not a Unicode script name")
            try:
                regex.compile(rf"\p{{Script={script}}}")
            except regex.error:
                raise ValueError(f"{script!r} is not a Unicode script name") from None
        return scripts


class ClassifierCheck(_Check):
    """Ask a guard model. ``llama_guard``: a chat model served as one of this gateway's pools
    (Llama Guard, ShieldGemma on vLLM), which answers ``safe`` or ``unsafe`` and the categories
    on the next line (``unsafe\\nS1``). ``openai_moderation``: an external endpoint shaped like
    OpenAI's POST /v1/moderations (``results[0].flagged`` and ``categories``)."""

    kind: Literal["classifier"]
    protocol: Literal["llama_guard", "openai_moderation"] = "llama_guard"
    """llama_guard: a chat model behind one of this gateway's pools; openai_moderation: an
    endpoint shaped like OpenAI's /v1/moderations."""
    pool: str = ""
    """llama_guard: the gateway pool that serves the guard model."""
    model: str = ""
    """The model name sent to the guard. Empty: the pool replica's upstream model (llama_guard),
    omitted (openai_moderation)."""
    url: str = ""
    """openai_moderation: the endpoint's full URL, e.g. https://api.openai.com/v1/moderations."""
    api_key: SecretStr | None = None
    """openai_moderation: bearer key sent to the endpoint."""
    api_key_env: str = ""
    """openai_moderation: environment variable holding the key (api_key wins when both set)."""
    categories: list[str] = Field(default_factory=list)
    """Block only these categories (S1, S10 ...; moderation category names). Empty: any unsafe
    or flagged answer blocks."""
    timeout_s: float = Field(default=2.0, gt=0, le=60)
    """The guard's whole answer must arrive within this."""
    on_error: FailureMode = "closed"
    """When the guard times out, fails or answers something unreadable: let the text through
    (open) or refuse it (closed)."""
    max_chars: int = Field(default=8000, ge=1)
    """The guard sees the last this many characters of the text."""

    @model_validator(mode="after")
    def _target(self) -> Self:
        if self.protocol == "llama_guard" and not self.pool:
            raise ValueError("a llama_guard classifier needs the gateway pool serving it (pool)")
        if self.protocol == "openai_moderation" and not self.url.startswith(
            ("http://", "https://")
        ):
            raise ValueError("an openai_moderation classifier needs the endpoint's http(s) url")
        return self

    def resolved_api_key(self) -> str | None:
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if self.api_key_env:
            return os.environ.get(self.api_key_env) or None
        return None


SafetyCheck = Annotated[
    DenyListCheck | RegexCheck | PiiCheck | SizeCheck | ScriptCheck | ClassifierCheck,
    Field(discriminator="kind"),
]


class SafetyPolicy(Section):
    """The checks one policy runs, in order (the first refusal wins: put classifiers last)."""

    input: list[SafetyCheck] = Field(default_factory=list)
    """Checks on the request's text (every message's content, or the prompt), before it is
    counted, limited or routed."""
    output: list[SafetyCheck] = Field(default_factory=list)
    """Checks on the answer's text: a whole answer at once, a stream on a sliding window."""
    window_chars: int = Field(default=1024, ge=1)
    """Streams: the output checks see the text not yet checked plus up to this much text before
    it, so a term split across chunks is still found."""
    hold_chars: int = Field(default=32, ge=0)
    """Streams: chunks are held until this many new characters can be checked together (0:
    every chunk is checked on its own)."""
    max_hold_ms: float = Field(default=200.0, ge=0)
    """Streams: no chunk is held longer than this waiting for ``hold_chars``; the bound on the
    delay the gate adds to the first token (plus the checks' own time)."""

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        for stage, checks in (("input", self.input), ("output", self.output)):
            labels = [check.label for check in checks]
            twice = {label for label in labels if labels.count(label) > 1}
            if twice:
                raise ValueError(
                    f"{stage} checks need distinct names (set name: on each): {sorted(twice)}"
                )
        return self


class SafetyConfig(Section):
    """Content-safety gates applied at the gateway (README, "Content-safety gates")."""

    policies: dict[str, SafetyPolicy] = Field(default_factory=dict)
    """Named policies. Names are metric labels: lower-case letters, digits, ``_.-``."""
    models: dict[str, str] = Field(default_factory=dict)
    """Public model name → policy applied to every request for it. A tenant's own policy (its
    ``safety_policy`` setting) applies on top: neither can lift the other."""

    @model_validator(mode="after")
    def _known_policies(self) -> Self:
        for name in self.policies:
            if not re.fullmatch(_NAME, name):
                raise ValueError(f"policy name {name!r}: use lower-case letters, digits, _ . -")
        unknown = sorted({p for p in self.models.values() if p not in self.policies})
        if unknown:
            raise ValueError(f"safety.models names policies that do not exist: {unknown}")
        return self
