"""The Batch API."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from tidegate.config.section import Section


class BatchConfig(Section):
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
