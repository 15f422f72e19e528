"""The typed configuration schema.

One place reads configuration: a YAML file (``--config`` or ``TIDEGATE_CONFIG``) and
``TIDEGATE_*`` environment variables (nested fields use ``__``, for example
``TIDEGATE_SERVER__PORT=9000``). Environment variables override the file. Every field has a
default and a docstring; the README's configuration reference is generated from this package
(``python -m tidegate.config_docs``). Nothing else in tidegate reads the environment.

Each section lives in its own module; this package re-exports them all, so callers import
from ``tidegate.config``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from tidegate.config.adapters import AdapterConfig, adapter_target
from tidegate.config.autoscaling import AutoscalingPolicy, ScalingSignal
from tidegate.config.batch import BatchConfig
from tidegate.config.engines import EnginePoolConfig, EngineProfile, EnginesConfig, LocalPool
from tidegate.config.limits import LimitsConfig, ModelPrice, ValidationConfig
from tidegate.config.metering import MeteringConfig
from tidegate.config.rollouts import RolloutConfig
from tidegate.config.routing import (
    HealthConfig,
    ModelRoute,
    PoolConfig,
    PoolCost,
    RouteRule,
    RoutingConfig,
    TimeWindow,
    check_pool_prices,
)
from tidegate.config.safety import (
    ClassifierCheck,
    DenyListCheck,
    PiiCheck,
    RegexCheck,
    SafetyConfig,
    SafetyPolicy,
    ScriptCheck,
    SizeCheck,
)
from tidegate.config.scheduling import ClusterConfig, QueueClassConfig, SchedulingConfig
from tidegate.config.section import BUNDLED_MODEL, DEFAULT_HOME, ProviderName, Section
from tidegate.config.server import ConsoleConfig, ServerConfig, StoreConfig, TelemetryConfig
from tidegate.config.upstreams import UpstreamServer

__all__ = [
    "BUNDLED_MODEL",
    "DEFAULT_HOME",
    "ProviderName",
    "Section",
    "ConsoleConfig",
    "ServerConfig",
    "StoreConfig",
    "TelemetryConfig",
    "AutoscalingPolicy",
    "ScalingSignal",
    "AdapterConfig",
    "adapter_target",
    "EnginePoolConfig",
    "EngineProfile",
    "EnginesConfig",
    "LocalPool",
    "UpstreamServer",
    "ClusterConfig",
    "QueueClassConfig",
    "SchedulingConfig",
    "HealthConfig",
    "ModelRoute",
    "PoolConfig",
    "PoolCost",
    "TimeWindow",
    "RouteRule",
    "RoutingConfig",
    "LimitsConfig",
    "ModelPrice",
    "ValidationConfig",
    "MeteringConfig",
    "BatchConfig",
    "RolloutConfig",
    "ClassifierCheck",
    "DenyListCheck",
    "PiiCheck",
    "RegexCheck",
    "SafetyConfig",
    "SafetyPolicy",
    "ScriptCheck",
    "SizeCheck",
    "Config",
    "load_config",
]


class Config(BaseSettings):
    """Effective tidegate configuration."""

    model_config = SettingsConfigDict(
        env_prefix="TIDEGATE_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    home: Path = DEFAULT_HOME
    """Where tidegate keeps its SQLite store, engine venv, prepared models, state and logs."""
    admin_key: SecretStr | None = None
    """Admin API key. Unset: one is generated at first start, printed once and stored hashed."""
    server: ServerConfig = Field(default_factory=ServerConfig)
    """The gateway's HTTP server."""
    store: StoreConfig = Field(default_factory=StoreConfig)
    """Keys, tenants, usage records and the audit log."""
    engines: EnginesConfig = Field(default_factory=EnginesConfig)
    """Local vLLM replicas supervised by tidegate."""
    upstreams: list[UpstreamServer] = Field(default_factory=list)
    """Already-running OpenAI-compatible servers to route to (no engine is started for them)."""
    scheduling: SchedulingConfig = Field(default_factory=SchedulingConfig)
    """Per-pool queues in the gateway: priority classes, fair share, admission control."""
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    """Pools, routing rules, fallback, spillover, balancing and replica health."""
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    """Rate limits, concurrency and budget reservations."""
    pricing: dict[str, ModelPrice] = Field(default_factory=dict)
    """Price per public model name, for cost budgets and usage records."""
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    """Request validation before anything reaches an engine."""
    metering: MeteringConfig = Field(default_factory=MeteringConfig)
    """Usage records and prompt-log retention."""
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    """OpenTelemetry traces."""
    batch: BatchConfig = Field(default_factory=BatchConfig)
    """The OpenAI Files and Batch APIs."""
    rollouts: RolloutConfig = Field(default_factory=RolloutConfig)
    """Model versions, traffic splits, shadow traffic and staged rollouts."""
    safety: SafetyConfig = Field(default_factory=SafetyConfig)
    """Content-safety gates: input and output policies per model and per tenant."""
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    """The web console for operators and tenant admins."""

    @model_validator(mode="after")
    def _priced_pools(self) -> Config:
        check_pool_prices(self.routing, self.pricing)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        yaml_path = settings_cls.model_config.get("yaml_file") or os.environ.get("TIDEGATE_CONFIG")
        if yaml_path:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_path))
        return tuple(sources)

    # Derived paths: one place decides the layout under `home`.
    @property
    def store_url(self) -> str:
        return self.store.url or f"sqlite+aiosqlite:///{self.home / 'tidegate.db'}"

    @property
    def engine_venv(self) -> Path:
        return Path(self.engines.venv) if self.engines.venv else self.home / "engine-venv"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def state_dir(self) -> Path:
        return self.home / "state"

    @property
    def files_dir(self) -> Path:
        return Path(self.batch.files_dir) if self.batch.files_dir else self.home / "files"

    @property
    def wal_dir(self) -> Path:
        return Path(self.metering.wal_dir) if self.metering.wal_dir else self.home / "wal"


def load_config(path: Path | None = None, **overrides: Any) -> Config:
    """Build the effective config: overrides > TIDEGATE_* env > YAML file > defaults.

    The YAML file is `path`, else the file named by TIDEGATE_CONFIG, else none.
    """
    if path is None:
        return Config(**overrides)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")

    class _FromFile(Config):
        model_config = SettingsConfigDict(**{**Config.model_config, "yaml_file": str(path)})

    return _FromFile(**overrides)
