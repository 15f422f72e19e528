"""LoRA adapters a local pool's replicas serve next to their base model."""

from __future__ import annotations

from pydantic import Field, model_validator

from tidegate.config.section import Section

ADAPTER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
"""Like pool names: an adapter version is a pool of the routing table (a metric label, part of
the x-tidegate-backend header) and vLLM's LoRA name."""
ADAPTER_VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,30}$"
HUB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$"


def adapter_target(name: str, version: str) -> str:
    """The pool and vLLM LoRA name of one adapter version: NAME, or NAME@VERSION."""
    return f"{name}@{version}" if version else name


class AdapterConfig(Section):
    """One LoRA adapter of a local pool: a public model name clients call like any other
    (``model: "support-bot"``), served by the pool's replicas with the adapter applied."""

    name: str = Field(pattern=ADAPTER_NAME_PATTERN)
    """The public model name (the same characters as pool names). It must differ from every
    pool and model name; two entries may share it only as two versions of one adapter."""
    version: str = Field(default="", pattern=r"^$|" + ADAPTER_VERSION_PATTERN)
    """A version label. The version's pool (and vLLM LoRA name) is NAME, or NAME@VERSION when
    set; splits and rollouts between two versions of an adapter name those pools."""
    path: str = ""
    """The adapter directory (adapter_config.json and the weights), as the replicas see it."""
    hub_id: str = Field(default="", pattern=r"^$|" + HUB_ID_PATTERN)
    """A Hugging Face hub id instead of ``path`` (vLLM downloads it)."""
    base_model: str = ""
    """The model the adapter was trained on; when set it must equal the pool's model (a LoRA
    applied to another base gives garbage, not an error)."""
    max_lora_rank: int = Field(default=16, ge=1, le=512)
    """The adapter's LoRA rank (r in adapter_config.json); the pool's vLLM --max-lora-rank is
    the largest of its adapters'."""

    @model_validator(mode="after")
    def _one_source(self) -> AdapterConfig:
        if bool(self.path) == bool(self.hub_id):
            raise ValueError(f"adapter {self.name}: set exactly one of path and hub_id")
        if self.path and ("\x00" in self.path or ".." in self.path.split("/")):
            raise ValueError(f"adapter {self.name}: path may not contain NUL or '..' parts")
        return self

    @property
    def source(self) -> str:
        return self.path or self.hub_id

    @property
    def target(self) -> str:
        return adapter_target(self.name, self.version)


def lora_rank(
    adapters: tuple[AdapterConfig, ...] | list[AdapterConfig], at_least: int | None = None
) -> int:
    """vLLM's --max-lora-rank for these adapters: the largest rank (``at_least`` when given and
    higher; 16 for none), rounded up to the ranks vLLM accepts (1, 8, 16, 32, 64, 128, 256,
    320, 512)."""
    ranks = [adapter.max_lora_rank for adapter in adapters]
    rank = max([*ranks, at_least] if at_least is not None else ranks or [16])
    for allowed in (1, 8, 16, 32, 64, 128, 256, 320, 512):
        if rank <= allowed:
            return allowed
    return 512
