"""Rate-limit storage, prices and request validation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from tidegate.config.section import Section


class LimitsConfig(Section):
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


class ModelPrice(Section):
    input_per_million: float = 0.0
    """USD per million prompt tokens."""
    cached_input_per_million: float | None = None
    """USD per million cached prompt tokens. None: the input price."""
    output_per_million: float = 0.0
    """USD per million completion tokens."""


class ValidationConfig(Section):
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
