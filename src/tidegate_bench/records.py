"""One request's measured facts, and the per-request metrics derived from them.

Times are seconds from the run's start. ``scheduled_s`` is when the request was due: for open
loops the arrival schedule's time, for closed loops the send time. Latencies count from
``scheduled_s``, so a client that falls behind its schedule shows up as latency instead of
silently sending less (no coordinated omission).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True, slots=True)
class RequestRecord:
    index: int
    """Position in the prompt sequence: the same prompt on every target, so records pair up."""
    target: str
    tenant: str
    scheduled_s: float
    sent_s: float
    end_s: float
    content_s: tuple[float, ...]
    """Arrival time of every chunk carrying generated text."""
    prompt_tokens: int | None
    output_tokens: int | None
    """From the server's usage field, else from the client's own count."""
    cached_tokens: int | None
    token_mismatch: bool
    status: int
    error: str
    """"" for success, else http_429, http_5xx, timeout, connect or other."""
    detail: str = ""
    measured: bool = True
    """False inside warm-up or cool-down: kept in the CSV, left out of the statistics."""

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def ttft_ms(self) -> float | None:
        """Time to the first chunk with content."""
        if not self.ok or not self.content_s:
            return None
        return (self.content_s[0] - self.scheduled_s) * 1000.0

    @property
    def e2el_ms(self) -> float | None:
        return (self.end_s - self.scheduled_s) * 1000.0 if self.ok else None

    @property
    def tpot_ms(self) -> float | None:
        """(E2E - TTFT) / (N - 1) for N > 1 output tokens, as ``vllm bench serve`` has it."""
        ttft, e2e, n = self.ttft_ms, self.e2el_ms, self.output_tokens
        if ttft is None or e2e is None or n is None or n <= 1:
            return None
        return (e2e - ttft) / (n - 1)

    def itl_ms(self) -> list[float]:
        """Gaps between successive content chunks."""
        if not self.ok:
            return []
        c = self.content_s
        return [(c[i] - c[i - 1]) * 1000.0 for i in range(1, len(c))]
