"""Fuzz the redactor (``gateway/redaction``), which cleans prompts before they are logged.

Invariants, for any text:
- ``redact`` never raises, and its output holds no credential ``scan_for_secrets`` would find
  (redacting may join text around a placeholder, which must not form a new key);
- findings are in order, inside the text, and do not overlap.
With a credential planted anywhere in the text (a tidegate key, an OpenAI-style key, a bearer
token, an AWS key id), followed by anything but an ASCII word character (which would make it a
longer, different token), the credential's secret part is gone from the output.
Redacting is idempotent: a finding glued to another (a phone number right after a phone
number) is caught by the redactor's repeated passes, so a second ``redact`` changes nothing.
"""

from __future__ import annotations

import string

import atheris

from tidegate.pipeline.redaction import Redactor, scan_for_secrets

REDACTOR = Redactor()
_ALNUM = string.ascii_letters + string.digits
_PLANTED = (
    ("tg-", 24, ""),
    ("sk-proj-", 32, ""),
    ("Authorization: Bearer ", 28, ""),
    ("AKIA", 16, "upper"),
)


def _secret(fdp: atheris.FuzzedDataProvider, length: int, alphabet: str) -> str:
    chars = string.ascii_uppercase + string.digits if alphabet == "upper" else _ALNUM
    return "".join(chars[fdp.ConsumeIntInRange(0, len(chars) - 1)] for _ in range(length))


def check(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    plant = fdp.ConsumeIntInRange(0, len(_PLANTED))
    secret = ""
    if plant < len(_PLANTED):
        prefix, length, alphabet = _PLANTED[plant]
        secret = _secret(fdp, length, alphabet)
        before = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 256))
        after = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 256))
        if after[:1] and after[0] in _ALNUM + "_-":
            after = " " + after  # an ASCII word character would make it a longer, other token
        # Any other character may follow: punctuation, or text in a language without spaces.
        text = before + " " + prefix + secret + after
    else:
        text = fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes())
    findings = REDACTOR.find(text)
    position = 0
    for finding in findings:
        assert position <= finding.start < finding.end <= len(text), findings
        position = finding.end
    redacted = REDACTOR.redact(text)
    assert not scan_for_secrets(redacted), (text, redacted)
    assert REDACTOR.redact(redacted) == redacted, (text, redacted)
    if secret:
        assert secret not in redacted, (text, redacted)
