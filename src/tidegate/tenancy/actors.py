"""Who performs an administrative action, and which tenants that actor may see.

The scoping rule lives here so the admin API and the CLI share it: an admin key of the system
tenant is the operator and manages every tenant; an admin key of any other tenant is confined
to its own tenant; member keys may not administer anything. Services check visibility with
:meth:`Actor.sees` and answer an invisible object exactly like a missing one, so ids of other
tenants cannot be probed.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tidegate.errors import NotFoundError, PermissionDeniedError
from tidegate.store.models import SYSTEM_TENANT_ID, Tenant

if TYPE_CHECKING:
    from tidegate.tenancy.principal import Principal


@dataclass(frozen=True, slots=True)
class Actor:
    name: str
    """Recorded as the audit event's actor: the key's name, or ``cli:<user>``."""
    key_id: str | None
    """The acting key; None for the CLI, which works on the store directly."""
    tenant_id: str | None
    """The one tenant this actor may see and touch; None: every tenant (the operator)."""

    @property
    def is_operator(self) -> bool:
        return self.tenant_id is None

    @property
    def home_tenant_id(self) -> str:
        """Where the actor's new keys go by default."""
        return self.tenant_id or SYSTEM_TENANT_ID

    def sees(self, tenant_id: str) -> bool:
        return self.tenant_id is None or self.tenant_id == tenant_id

    @classmethod
    def cli(cls) -> Actor:
        """The person running the CLI: an operator, since they hold the store's credentials."""
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no login name in minimal containers
            user = "unknown"
        return cls(name=f"cli:{user}", key_id=None, tenant_id=None)

    @classmethod
    def internal(cls, what: str) -> Actor:
        """tidegate itself (startup, tests): an operator with no key."""
        return cls(name=f"tidegate:{what}", key_id=None, tenant_id=None)

    @classmethod
    def admin(cls, principal: Principal) -> Actor:
        """The actor for an authenticated key; PermissionDeniedError unless it is an admin key."""
        if principal.role != "admin":
            raise PermissionDeniedError(
                "This API key is a member key; the /admin API needs an admin key of the tenant.",
                code="admin_key_required",
            )
        scope = None if principal.tenant_id == SYSTEM_TENANT_ID else principal.tenant_id
        return cls(name=principal.name, key_id=principal.key_id, tenant_id=scope)


def tenant_not_found(tenant_id: str) -> NotFoundError:
    # The same answer for a missing tenant and one the actor may not see.
    return NotFoundError(f"No tenant with id '{tenant_id}'.", param="tenant_id")


async def visible_tenant(
    session: AsyncSession, actor: Actor, tenant_id: str, *, for_update: bool = False
) -> Tenant:
    """The tenant row if it exists and the actor may see it, else NotFoundError."""
    if not actor.sees(tenant_id):
        raise tenant_not_found(tenant_id)
    query = select(Tenant).where(Tenant.id == tenant_id)
    if for_update:
        query = query.with_for_update()  # PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises
    row = await session.scalar(query)
    if row is None:
        raise tenant_not_found(tenant_id)
    return row
