"""The usage WAL and its flushing."""

from __future__ import annotations

from pydantic import Field

from tidegate.config.section import Section


class MeteringConfig(Section):
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
