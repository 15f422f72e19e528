"""The HTTP server, the store, the console and telemetry."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from tidegate.config.section import Section


class ServerConfig(Section):
    host: str = "127.0.0.1"
    """Address the gateway listens on. Use 0.0.0.0 inside a container."""
    port: int = 8080
    """Port of the OpenAI-compatible endpoint, /healthz, /readyz and (with a token) /metrics."""
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Port of a separate listener that serves only GET /metrics, with no token: bind it where
    only the scraper reaches (server.metrics_host). 0: any free port. None: no listener."""
    metrics_host: str = "127.0.0.1"
    """Address of the metrics listener. Use 0.0.0.0 inside a container."""
    metrics_token: SecretStr | None = None
    """Bearer token that opens /metrics on the API port (an operator's admin key also does).
    The series name tenants, so nobody else gets them there."""
    max_body_bytes: int = 4 * 1024 * 1024
    """Largest request body accepted; larger bodies get 413."""
    request_timeout_s: float = 600.0
    """Longest a whole upstream request may take before the client gets 504."""
    idle_timeout_s: float = 300.0
    """Longest an upstream may stay silent (no byte) mid-request before the client gets 504."""
    connect_timeout_s: float = 5.0
    """TCP connect timeout towards an upstream."""
    upstream_max_connections: int = 1024
    """Connection pool size per gateway process towards all upstreams."""
    access_log: bool = True
    """Write one structured JSON access line per request."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Level of tidegate's own log lines."""


class StoreConfig(Section):
    url: str = ""
    """SQLAlchemy async URL of the store. Empty: a SQLite file in the home directory.
    PostgreSQL: postgresql+asyncpg://user@host:5432/db."""
    key_cache_ttl_s: float = 5.0
    """How long a verified API key stays cached in the gateway; revocations take effect
    within this time."""
    key_cache_outage_s: float = Field(default=900.0, ge=0)
    """While the store is unreachable, how long past key_cache_ttl_s a key this gateway verified
    still authenticates (never past the key's expiry). Unknown keys get 503 meanwhile."""


class ConsoleConfig(Section):
    """The web console at /console (a page that calls the admin API with the key signed in)."""

    enabled: bool = True
    """Serve the console at /console. False: /console is a 404 (the API is unchanged)."""


class TelemetryConfig(Section):
    otlp_endpoint: str = ""
    """OTLP/HTTP traces endpoint (for example http://otel-collector:4318/v1/traces). Empty: spans
    are not exported."""
    service_name: str = "tidegate"
    """service.name of exported spans."""
