from __future__ import annotations

import time

import pytest

from tidegate.pipeline.redaction import Redactor, scan_for_secrets
from tidegate.pipeline.redaction_patterns import luhn_valid


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor()


def test_each_family_gets_its_placeholder(redactor: Redactor) -> None:
    text = (
        "Mail ana@example.com, call +44 20 7946 0958, card 4111 1111 1111 1111, "
        "SSN 078-05-1120, host 10.1.2.3, key sk-abcdefghijklmnopqrstuvwx."
    )
    assert redactor.redact(text) == (
        "Mail [EMAIL], call [PHONE], card [CARD], SSN [NATIONAL_ID], host [IP], key [SECRET]."
    )


def test_cards_need_a_valid_luhn_digit(redactor: Redactor) -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
    assert redactor.redact("ref 4111-1111-1111-1112") == "ref 4111-1111-1111-1112"
    assert redactor.redact("pan 4111-1111-1111-1111") == "pan [CARD]"


def test_numbers_that_are_not_personal_data_survive(redactor: Redactor) -> None:
    text = "v2.10.4 on 2026-11-05T12:34:56Z, order ORD-2024-000123, $1,234.56, max_tokens=4096"
    assert redactor.redact(text) == text


def test_bearer_keeps_the_scheme_and_hides_the_credential(redactor: Redactor) -> None:
    assert redactor.redact("Authorization: Bearer abc.DEF-123_xyz") == (
        "Authorization: Bearer [SECRET]"
    )


def test_a_secret_that_contains_digits_is_one_secret(redactor: Redactor) -> None:
    token = "tg-4111111111111111abcdefghijklmnopqrstuvwxyz012"
    assert redactor.redact(f"key={token}") == "key=[SECRET]"


def test_national_ids_are_checked_where_they_carry_a_check(redactor: Redactor) -> None:
    assert redactor.redact("DNI 12345678Z") == "DNI [NATIONAL_ID]"
    assert redactor.redact("DNI 12345678A") == "DNI 12345678A"  # wrong check letter


def test_families_can_be_chosen(redactor: Redactor) -> None:
    only_email = Redactor(families=["EMAIL"])
    assert only_email.redact("a@example.com 10.0.0.1") == "[EMAIL] 10.0.0.1"
    with pytest.raises(ValueError, match="unknown redaction families"):
        Redactor(families=["NAMES"])


def test_scan_for_secrets() -> None:
    assert scan_for_secrets('{"api_key": "tg-' + "Zq9" * 15 + '"}')
    assert scan_for_secrets("AKIAIOSFODNN7EXAMPLE")
    assert not scan_for_secrets("a normal log line with tokens=512 and 10.0.0.1")


def test_redaction_time_grows_linearly_with_the_text(redactor: Redactor) -> None:
    """No pattern backtracks catastrophically: 4x the text costs about 4x the time, not 16x.

    A ratio within one test, best of three, rather than a wall-clock bound that a loaded
    machine breaks.
    """
    paragraph = (
        "The assistant explained: serving at scale needs tokens, keys and limits; "
        "contact ops@example.com or +1 (555) 010-0199 from 192.0.2.10. "
    )
    small = paragraph * (250_000 // len(paragraph))
    large = small * 4

    def best_of_three(text: str) -> float:
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            redacted = redactor.redact(text)
            timings.append(time.perf_counter() - started)
        assert redacted.count("[EMAIL]") == text.count("ops@example.com")
        return min(timings)

    ratio = best_of_three(large) / best_of_three(small)
    assert ratio < 8, f"1 MB took {ratio:.1f}x as long as 250 KB (linear: ~4x)"
