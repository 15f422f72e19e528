"""The patterns behind the redactor: one compiled regex per family, plus the checks that turn a
candidate into a finding (Luhn for cards, check letters and keys for national IDs, a real
address parse for IPv6, a digit count for phones, entropy for generic secrets).

Each finder yields ``(start, end)`` spans of the text to replace. Families and what they cover:

- SECRET: tidegate keys (tg-...), OpenAI/Anthropic style (sk-..., sk-proj-..., sk-ant-...),
  Stripe (sk_live_...), AWS access key ids (AKIA/ASIA...), GitHub (ghp_/gho_/ghu_/ghs_/ghr_,
  github_pat_), Slack (xox?-), Google (AIza...), JWTs, PEM private keys, ``Bearer``/``Basic``
  credentials, and values after key-like names (api_key=, token:, secret=, password=...).
- EMAIL: addresses with a dotted domain.
- NATIONAL_ID: US SSN (dashed or spaced), UK National Insurance number, Spanish DNI and NIE
  (check letter verified), French NIR / INSEE number (key verified), Italian codice fiscale.
- CARD: 13-19 digits, optionally grouped by spaces or dashes, starting 2-6, Luhn-valid.
- IP: IPv4 dotted quads and IPv6 addresses (any valid form, compressed or IPv4-suffixed).
- PHONE: international (+CC ...), North American ((555) 010-0199, 555-010-0199), and European
  national numbers with a leading 0 (UK, German, French, ...), 7-15 digits.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator

__all__ = ["FINDERS", "Finder", "luhn_valid"]

Finder = Callable[[str], Iterator[tuple[int, int]]]


def _compile(pattern: str, flags: int = 0) -> re.Pattern[str]:
    """ASCII classes: ``\\w``, ``\\d`` and ``\\s`` as the formats define them. With Unicode
    classes a letter of a script written without spaces (Chinese, Thai ...) counted as part of
    the key or number beside it, so a key followed by such text was never found."""
    return re.compile(pattern, flags | re.ASCII)


# One regex per key format: each starts with a literal, which the regex engine searches for
# quickly; an alternation of them would be tried at every position.
_SECRET_TOKENS = tuple(
    _compile(pattern + r"(?![\w-])")
    for pattern in (
        r"tg-[A-Za-z0-9_-]{16,}",
        r"sk-(?:proj-|ant-|live-|svcacct-)?[A-Za-z0-9_-]{16,}",
        r"[srp]k_(?:live|test)_[A-Za-z0-9]{16,}",
        r"A(?:KIA|SIA|GPA|IDA|ROA)[A-Z0-9]{16}",
        r"gh[pousr]_[A-Za-z0-9]{30,}",
        r"github_pat_[A-Za-z0-9_]{22,}",
        r"xox[abposr]-[A-Za-z0-9-]{10,}",
        r"AIza[0-9A-Za-z_-]{35}",
        r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    )
)
_PEM = _compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S
)
# The credential after an auth scheme; the scheme word stays readable. Leading character
# classes (rather than re.I on the whole) keep the fast first-character scan.
_AUTH_SCHEME = _compile(r"[BbTt](?i:(?<=b)earer|(?<=b)asic|(?<=t)oken)\s+([A-Za-z0-9._~+/=-]{8,})")
# A value after a key-like name: api_key=..., "token": "...", secret: ..., password=...
_KEYED = _compile(
    r"([AaSsTtPpKkCc](?i:(?<=a)pi[_-]?key|(?<=a)pikey|(?<=a)ccess[_-]?key|(?<=s)ecret|(?<=t)oken"
    r"|(?<=p)assw(?:or)?d|(?<=p)wd|(?<=p)rivate[_-]?key|(?<=c)redentials?|(?<=a)uth|(?<=k)ey)"
    r"[\w-]*)[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9+/_.~=!@#$%^*-]{6,})"
)
_STRONG_KEY_NAMES = _compile(r"(?i)secret|passw(?:or)?d|pwd|private|credential")

_EMAIL = _compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}(?![\w-])"
)

_SSN = _compile(r"\d(?<![\w-]\d)(\d\d)([- ])(\d{2})\2(\d{4})(?![\w-])")
_UK_NINO = _compile(
    r"[A-CEGHJ-PR-TW-Z](?<!\w[A-Z])[A-CEGHJ-NPR-TW-Z]"
    r"(?: ?\d{2}){3} ?[A-D](?!\w)"
)
_ES_DNI = _compile(r"([XYZ\d])(?<![\w-][XYZ\d])(\d{6,7})[ -]?([A-Z])(?!\w)")
_NINO_UNUSED_PREFIXES = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})
_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"
_FR_NIR = _compile(
    r"([12])(?<![\w-][12]) ?(\d{2}) ?(0[1-9]|1[0-2]|[2-9]\d) ?(\d{2}|2A|2B) ?(\d{3}) ?(\d{3})"
    r" ?(\d{2})(?![\w-])"
)
_IT_CF = _compile(r"[A-Z](?<!\w[A-Z])[A-Z]{5}\d{2}[A-EHLMPR-T]\d{2}[A-Z]\d{3}[A-Z](?!\w)")

_CARD = _compile(r"[2-6](?<![\w.,-][2-6])\d{3}(?:[ -]?\d){9,15}(?![\w-]|[.,]\d)")

_IPV4 = _compile(r"\d(?<![\w.]\d)\d{0,2}(?:\.\d{1,3}){3}(?!\w|\.\d)")
_IPV6 = _compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?"
    r"(?![\w:]|\.\w)"
)

_PHONE_INTL = _compile(
    r"[+0](?<![\w+][+0])(?:(?<=\+)\d{1,3}|(?<=0)0\d{1,3}[ .-])"
    r"(?:[ .-]?(?:\(\d{1,5}\)|\d{1,5})){1,6}"
    r"(?![\w-]|[.:]\d)"
)
_PHONE_NANP = _compile(
    r"[\d(](?<![\w.+-][\d(])(?<!\d[ .-][\d(])"
    r"(?:(?<=1)[ .-](?:\(\d{3}\) ?|\d{3}[ .-])|(?<=\()\d{3}\) ?|(?<=\d)\d\d[ .-])"
    r"\d{3}[ .-]\d{4}(?![\w-]|[.:]\d)"
)
_PHONE_NATIONAL = _compile(
    r"[(0](?<![\w.+/-][(0])(?<!\d[ .-][(0])(?:(?<=\()0\d{1,4}\)|(?<=0)[1-9]\d{0,4})"
    r"(?:[ ./-]?\d{2,8}){1,4}(?![\w-]|[.:/]\d)"
)


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _entropy(value: str) -> float:
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def _digits(text: str) -> str:
    return "".join(char for char in text if char.isdigit())


def _starts_word(text: str, start: int) -> bool:
    # Checked here rather than by a leading lookbehind, which would stop the regex engine from
    # skipping ahead to the pattern's first literal (ten times slower on long prose).
    before = text[start - 1] if start else " "
    return not (before.isascii() and before.isalnum() or before in "_-")


def find_secrets(text: str) -> Iterator[tuple[int, int]]:
    for pattern in _SECRET_TOKENS:
        for match in pattern.finditer(text):
            if _starts_word(text, match.start()):
                yield match.span()
    for match in _PEM.finditer(text):
        yield match.span()
    for match in _AUTH_SCHEME.finditer(text):
        if _starts_word(text, match.start()):
            yield match.span(1)
    for match in _KEYED.finditer(text):
        value = match.group(2)
        if _STRONG_KEY_NAMES.search(match.group(1)):
            yield match.span(2)
        # A token-like name: only values that look random (not "max_tokens=4096").
        elif len(value) >= 16 and _entropy(value) >= 3.0 and not value.isdigit():
            yield match.span(2)


def find_emails(text: str) -> Iterator[tuple[int, int]]:
    if "@" not in text:
        return
    for match in _EMAIL.finditer(text):
        yield match.span()


def _dni_valid(first: str, rest: str, letter: str) -> bool:
    # DNI: 8 digits; NIE: X, Y or Z (read as 0, 1, 2) and 7 digits; both end in a check letter.
    if first in "XYZ":
        if len(rest) != 7:
            return False
        number = str("XYZ".index(first)) + rest
    elif len(rest) == 7:
        number = first + rest
    else:
        return False
    return _DNI_LETTERS[int(number) % 23] == letter


def _ssn_valid(groups: tuple[str, ...]) -> bool:
    area = groups[0][:3]
    return (
        area not in ("000", "666") and area[0] != "9" and groups[2] != "00" and groups[3] != "0000"
    )


def _nir_valid(groups: tuple[str, ...]) -> bool:
    body = "".join(groups[:-1])
    # Corsica's departments 2A/2B count as 19/18 for the key.
    number = int(body.replace("2A", "19").replace("2B", "18"))
    return 97 - number % 97 == int(groups[-1])


def find_national_ids(text: str) -> Iterator[tuple[int, int]]:
    for match in _SSN.finditer(text):
        if _ssn_valid((match.group()[:3], *match.groups())):
            yield match.span()
    for match in _UK_NINO.finditer(text):
        if match.group()[:2] not in _NINO_UNUSED_PREFIXES:
            yield match.span()
    for match in _ES_DNI.finditer(text):
        if _dni_valid(*match.groups()):
            yield match.span()
    for match in _FR_NIR.finditer(text):
        if _nir_valid(match.groups()):
            yield match.span()
    for match in _IT_CF.finditer(text):
        yield match.span()


def find_cards(text: str) -> Iterator[tuple[int, int]]:
    for match in _CARD.finditer(text):
        digits = _digits(match.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            yield match.span()


def find_ips(text: str) -> Iterator[tuple[int, int]]:
    for match in _IPV4.finditer(text):
        if all(int(octet) <= 255 for octet in match.group().split(".")):
            yield match.span()
    if ":" not in text:
        return
    for match in _IPV6.finditer(text):
        candidate = match.group()
        if candidate.count(":") < 2 or len(candidate) < 3:
            continue
        try:
            ipaddress.IPv6Address(candidate)
        except ValueError:
            continue
        yield match.span()


def find_phones(text: str) -> Iterator[tuple[int, int]]:
    for pattern, low in ((_PHONE_INTL, 8), (_PHONE_NANP, 10), (_PHONE_NATIONAL, 9)):
        for match in pattern.finditer(text):
            if low <= len(_digits(match.group())) <= 15:
                yield match.span()


# In priority order: where findings overlap, the earlier family wins (a key that contains a
# run of digits is a secret, not a card).
FINDERS: tuple[tuple[str, Finder], ...] = (
    ("SECRET", find_secrets),
    ("EMAIL", find_emails),
    ("NATIONAL_ID", find_national_ids),
    ("CARD", find_cards),
    ("IP", find_ips),
    ("PHONE", find_phones),
)
