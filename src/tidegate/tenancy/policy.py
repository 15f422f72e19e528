"""What a tenant and a key are allowed to do: the JSON documents stored in ``tenants.settings``
and ``api_keys.settings``, validated here.

Every knob has a default that means "no extra restriction", so a tenant created with no settings
behaves like the single-tenant gateway of the foundation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from tidegate.protocol.extension_names import ForwardedExtension
from tidegate.tenancy.limit_kinds import KINDS, MAX_COUNT, LimitKind

__all__ = [
    "MAX_COUNT",
    "ROLES",
    "TIERS",
    "Budgets",
    "KeySettings",
    "LimiterFailureMode",
    "RateLimits",
    "Role",
    "TenantSettings",
    "Tier",
    "section_model",
]

Tier = Literal["interactive", "batch", "internal"]
TIERS: tuple[Tier, ...] = ("interactive", "batch", "internal")
Role = Literal["admin", "member"]
ROLES: tuple[Role, ...] = ("admin", "member")
LimiterFailureMode = Literal["closed", "open"]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


def section_model(name: str, section: str, kinds: tuple[LimitKind, ...] = KINDS) -> type[_Doc]:
    """The settings model of one section of a kinds table: a field per kind, in table order."""
    fields: dict[str, Any] = {
        kind.field: (
            float | None if kind.usd else int | None,
            Field(default=None, gt=0, description=kind.description)
            if kind.usd
            else Field(default=None, ge=1, le=MAX_COUNT, description=kind.description),
        )
        for kind in kinds
        if kind.section == section
    }
    return create_model(name, __base__=_Doc, __module__=__name__, **fields)


if TYPE_CHECKING:  # the fields come from the table; code reads them through it

    class RateLimits(_Doc):
        """Rate limits: one field per ``limits`` kind of ``limit_kinds.KINDS``."""

    class Budgets(_Doc):
        """Budgets: one field per ``budgets`` kind of ``limit_kinds.KINDS``."""

else:
    RateLimits = section_model("RateLimits", "limits")
    Budgets = section_model("Budgets", "budgets")


class TenantSettings(_Doc):
    limits: RateLimits = Field(default_factory=RateLimits)
    """Rate limits shared by all of the tenant's keys."""
    budgets: Budgets = Field(default_factory=Budgets)
    """Token and cost budgets."""
    allowed_models: list[str] | None = None
    """Public model names the tenant may use. None: every model."""
    max_prompt_tokens: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    """Longest prompt accepted, counted with the model's tokenizer. None: the context length."""
    default_max_tokens: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    """max_tokens applied when a request gives none."""
    max_tokens_limit: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    """Largest max_tokens accepted."""
    log_prompts: bool = False
    """Keep redacted prompt and completion text for this tenant's requests."""
    prompt_retention_days: int = Field(default=30, ge=1, le=36_500)
    """Days logged prompts are kept before the purge job deletes them."""
    on_limiter_unavailable: LimiterFailureMode = "closed"
    """When the shared limit store (Redis) is unreachable: refuse requests (closed) or admit them
    unlimited (open). Either way it is logged and counted."""
    max_batch_file_bytes: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    """Largest batch input file this tenant may upload. None: batch.max_file_bytes."""
    max_batch_file_lines: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    """Most lines (requests) in one of this tenant's batch input files. None:
    batch.max_file_lines."""
    allowed_extensions: list[ForwardedExtension] = Field(default_factory=list)
    """Engine extensions forwarded for this tenant (README, "Engine extensions"): e.g.
    remote_media_urls (http(s) URLs in content parts, which the engine fetches), chat_template,
    chat_template_kwargs, guided_decoding. Empty: none; content parts must use data: URLs.
    Operator-owned, like every tenant setting."""
    safety_policy: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")
    """The content-safety policy (a name in safety.policies) applied to this tenant's requests,
    on top of the model's own. Operator-owned: a tenant admin can neither remove nor weaken it.
    A name the gateway does not define refuses the tenant's requests (fails closed)."""


class KeySettings(_Doc):
    limits: RateLimits = Field(default_factory=RateLimits)
    """Rate limits of this key alone (on top of its tenant's)."""
    allowed_models: list[str] | None = None
    """Public model names this key may use (within its tenant's). None: the tenant's."""
    priority: Literal["interactive", "batch"] | None = None
    """The scheduling class of this key's requests. None: from the tenant's tier (interactive
    and internal: interactive; batch: batch)."""
