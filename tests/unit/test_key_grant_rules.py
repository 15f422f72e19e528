"""The ceilings a tenant admin's grant puts on a new key, field by field (no store needed: the
table of widenings over real HTTP is tests/integration/test_key_grants.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tidegate.errors import PermissionDeniedError
from tidegate.tenancy.key_grants import Grant, check_within_grant
from tidegate.tenancy.policy import KeySettings, TenantSettings, Tier

SOON = datetime(2030, 1, 1, tzinfo=UTC)


def grant(tier: Tier = "interactive", tenant: Any = None, key: Any = None) -> Grant:
    return Grant(
        tier=tier,
        tenant=TenantSettings.model_validate(tenant or {}),
        key=KeySettings.model_validate(key or {}),
        key_expires_at=None,
    )


def refused(held: Grant, settings: dict[str, Any], expires_at: datetime | None = None) -> str:
    with pytest.raises(PermissionDeniedError) as caught:
        check_within_grant(held, KeySettings.model_validate(settings), expires_at)
    assert caught.value.code == "exceeds_grant"
    return str(caught.value.param)


def test_an_admin_key_held_to_batch_hands_out_no_interactive_key() -> None:
    held = grant("interactive", key={"priority": "batch"})
    assert refused(held, {"priority": "interactive"}) == "settings.priority"
    assert refused(held, {}) == "settings.priority"  # unset: the tier's interactive class
    check_within_grant(held, KeySettings(priority="batch"), None)


def test_a_model_list_on_the_admin_key_needs_one_on_every_key_it_makes() -> None:
    held = grant(key={"allowed_models": ["a"]})
    assert refused(held, {}) == "settings.allowed_models"  # unset: every model
    check_within_grant(held, KeySettings(allowed_models=["a"]), None)


def test_an_operator_without_ceilings_leaves_the_tenant_admin_free() -> None:
    held = grant()
    check_within_grant(
        held, KeySettings.model_validate({"limits": {"tokens_per_minute": 10**9}}), None
    )
    check_within_grant(held, KeySettings(priority="interactive"), None)


def test_expiry_is_capped_by_the_admin_keys() -> None:
    held = Grant(tier="batch", tenant=TenantSettings(), key=KeySettings(), key_expires_at=SOON)
    assert refused(held, {}, None) == "expires_in_days"
    assert refused(held, {}, SOON + timedelta(seconds=1)) == "expires_in_days"
    check_within_grant(held, KeySettings(), SOON)
