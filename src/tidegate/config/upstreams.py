"""OpenAI-compatible and managed-API servers tidegate does not start."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, SecretStr

from tidegate.config.section import ProviderName, Section


class UpstreamServer(Section):
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
