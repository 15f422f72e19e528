"""Which class a request gets, the headers that shape it, and what engines are told."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidegate.config import Config
from tidegate.engines.profile import build_engine_command
from tidegate.errors import InvalidRequestError
from tidegate.scheduling import parse_deadline_ms, resolve_class
from tidegate.tenancy.policy import KeySettings


@pytest.mark.parametrize(
    ("tier", "key", "header", "expected"),
    [
        ("interactive", None, None, "interactive"),
        ("internal", None, None, "interactive"),
        ("batch", None, None, "batch"),
        ("interactive", "batch", None, "batch"),  # the key overrides the tier
        ("batch", "interactive", None, "interactive"),
        ("interactive", None, "batch", "batch"),  # the header may lower ...
        ("batch", None, "interactive", "batch"),  # ... never raise
        ("batch", "interactive", " Batch ", "batch"),
        ("interactive", None, "interactive", "interactive"),
    ],
)
def test_class_from_tier_key_and_header(
    tier: str, key: str | None, header: str | None, expected: str
) -> None:
    assert resolve_class(tier, key, header) == expected  # type: ignore[arg-type]


def test_unknown_priority_header_is_a_400() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        resolve_class("interactive", None, "urgent")
    assert caught.value.param == "x-tidegate-priority"


def test_key_settings_take_a_priority() -> None:
    assert KeySettings.model_validate({"priority": "batch"}).priority == "batch"
    assert KeySettings().priority is None
    with pytest.raises(ValueError):
        KeySettings.model_validate({"priority": "urgent"})


def test_deadline_header() -> None:
    assert parse_deadline_ms(None) is None
    assert parse_deadline_ms("1500") == 1.5
    assert parse_deadline_ms("0") == 0.0
    for bad in ("soon", "-1", "nan", "inf"):
        with pytest.raises(InvalidRequestError):
            parse_deadline_ms(bad)


def test_vllm_priority_scheduling_only_when_enabled(tmp_path: Path) -> None:
    plain = build_engine_command(config=Config(home=tmp_path), model="/m", port=1, device="cpu")
    assert "--scheduling-policy" not in plain.argv
    config = Config(home=tmp_path, scheduling={"engine_priority": True})
    argv = list(build_engine_command(config=config, model="/m", port=1, device="cpu").argv)
    assert argv[argv.index("--scheduling-policy") + 1] == "priority"
