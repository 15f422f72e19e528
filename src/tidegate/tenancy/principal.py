"""Who a request acts as once its key is verified: the key, its tenant and both policies.

Its own module so that the key cache, the admin actors and the request pipeline can name it without
importing the key service (which imports all three).
"""

from __future__ import annotations

from dataclasses import dataclass

from tidegate.tenancy.policy import KeySettings, Role, TenantSettings, Tier


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as, once its key is verified: the key and its tenant's policy."""

    key_id: str
    role: Role
    name: str
    tenant_id: str
    tenant_name: str
    tier: Tier
    tenant: TenantSettings
    key: KeySettings
