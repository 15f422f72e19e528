"""What a tenant's admin may give a new key: at most what it was given itself.

The operator decides what a tenant gets (its tier, limits, allowed models: the tenant row,
which only the operator changes) and what a tenant admin key gets (its own settings and
expiry). A tenant admin may hand out narrower keys (a lower scheduling class, fewer models,
lower limits, an earlier expiry) but never wider ones: every field of a new key is checked
against the tenant's grant and against the acting key's own, and the first field that would
widen either is refused with a 403 naming the field and its ceiling.

"Wider" is judged on what the key would get in effect: a field left unset inherits the
tenant's value, so an unset limit is fine under a tenant ceiling but refused when the acting
key has a tighter one of its own (the new key would get the tenant's looser value).
The operator is not checked: it is the one that grants.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tidegate.errors import PermissionDeniedError
from tidegate.scheduling.classes import RANK, tier_class
from tidegate.tenancy.policy import KeySettings, RateLimits, TenantSettings, Tier

_LIMIT_FIELDS: tuple[str, ...] = tuple(RateLimits.model_fields)


@dataclass(frozen=True, slots=True)
class Grant:
    """What the acting tenant admin holds: its tenant's policy and its own key's."""

    tier: Tier
    tenant: TenantSettings
    key: KeySettings
    key_expires_at: datetime | None


def check_within_grant(grant: Grant, settings: KeySettings, expires_at: datetime | None) -> None:
    """PermissionDeniedError (403) for the first field of a new key wider than ``grant``."""
    _check_priority(grant, settings)
    _check_models(grant, settings)
    for name in _LIMIT_FIELDS:
        _check_limit(grant, settings, name)
    _check_expiry(grant, expires_at)


def _check_priority(grant: Grant, settings: KeySettings) -> None:
    tier = tier_class(grant.tier)
    ceiling, whose = tier, f"the tenant's tier is {grant.tier}"
    own = grant.key.priority
    if own is not None and RANK[own] > RANK[tier]:
        ceiling, whose = own, "your key's priority"
    wanted = settings.priority or tier
    if RANK[wanted] < RANK[ceiling]:
        raise _widening(
            "settings.priority",
            f"asks for the {wanted} class, above the {ceiling} class this tenant admin may "
            f"grant ({whose}). Set settings.priority to {ceiling}, or ask the operator.",
        )


def _check_models(grant: Grant, settings: KeySettings) -> None:
    tenant, own = grant.tenant.allowed_models, grant.key.allowed_models
    ceiling = _intersect(tenant, own)
    if ceiling is None:
        return
    whose = {
        (True, False): "the tenant's",
        (False, True): "your key's",
        (True, True): "the tenant's and your key's",
    }[(tenant is not None, own is not None)]
    wanted = settings.allowed_models if settings.allowed_models is not None else tenant
    allowed = ", ".join(sorted(ceiling)) or "(none)"
    if wanted is None:
        raise _widening(
            "settings.allowed_models",
            f"is unset, which would allow every model; this tenant admin may grant only "
            f"{allowed} ({whose} allowed_models). List the models the key may use.",
        )
    outside = sorted(set(wanted) - set(ceiling))
    if outside:
        names = "is unset, so the key would get the tenant's models:"
        if settings.allowed_models is not None:
            names = "names"
        raise _widening(
            "settings.allowed_models",
            f"{names} {', '.join(outside)}, beyond the models this tenant admin may grant: "
            f"{allowed} ({whose} allowed_models). List the models the key may use.",
        )


def _check_limit(grant: Grant, settings: KeySettings, name: str) -> None:
    tenant = getattr(grant.tenant.limits, name)
    own = getattr(grant.key.limits, name)
    ceiling, whose = tenant, "the tenant's limit"
    if own is not None and (tenant is None or own < tenant):
        ceiling, whose = own, "your key's limit"
    if ceiling is None:
        return
    asked = getattr(settings.limits, name)
    wanted = asked if asked is not None else tenant
    if wanted is None or wanted > ceiling:
        shown = f"{asked}" if asked is not None else "unset (unlimited)"
        if asked is None and tenant is not None:
            shown = f"unset (the tenant's {tenant})"
        raise _widening(
            f"settings.limits.{name}",
            f"is {shown}, above the {ceiling} this tenant admin may grant ({whose}). Set it "
            f"to {ceiling} or lower.",
        )


def _check_expiry(grant: Grant, expires_at: datetime | None) -> None:
    ceiling = grant.key_expires_at
    if ceiling is None or (expires_at is not None and expires_at <= ceiling):
        return
    wanted = "never expires" if expires_at is None else f"expires {expires_at:%Y-%m-%d %H:%M}"
    raise _widening(
        "expires_in_days",
        f"the new key {wanted}, after this tenant admin's own key ({ceiling:%Y-%m-%d %H:%M} "
        "UTC). Give an expires_in_days that ends by then.",
    )


def _intersect(a: list[str] | None, b: list[str] | None) -> list[str] | None:
    if a is None:
        return b
    if b is None:
        return a
    return [name for name in a if name in b]


def _widening(param: str, detail: str) -> PermissionDeniedError:
    return PermissionDeniedError(
        f"A tenant admin may not grant a key more than it holds: '{param}' {detail}",
        param=param,
        code="exceeds_grant",
    )
