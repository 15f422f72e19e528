"""The abuse benchmark end to end with tiny counts: real gateway processes, every abusive input
class answered and timed, /healthz polled throughout, and the budget race on PostgreSQL and Redis.
It checks that every row is produced, not the figures (those belong to `make bench-abuse`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.store_fixtures import DEFAULT_POSTGRES_URL
from tests.support.processes import REDIS_URL

CLASSES = {
    "chat-100k-messages",
    "chat-over-max-body",
    "chat-over-max-body-chunked",
    "completions-100k-prompts",
    "max-tokens-string",
    "completions-max-tokens-string",
    "files-malformed-multipart",
    "files-upload-300mb",
    "files-upload-300mb-chunked",
    "batches-300mb",
    "batches-300mb-chunked",
    "files-line-over-max-body",
    "files-line-max-tokens-string",
    "batch-50k-lines",
}


def test_tiny_abuse_run_produces_every_row(tmp_path: Path) -> None:
    out = tmp_path / "abuse.json"
    postgres = os.environ.get("TIDEGATE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    command = [sys.executable, "-m", "benchmarks.abuse", "--out", str(out)]
    command += ["--count", "2", "--large-count", "1", "--class-seconds", "2"]
    command += ["--min-class-seconds", "0.2"]
    command += ["--batch-count", "1", "--batch-lines", "200", "--race-requests", "20"]
    command += ["--postgres-url", postgres, "--redis-url", REDIS_URL]
    done = subprocess.run(command, capture_output=True, timeout=280)
    assert done.returncode == 0, done.stdout.decode()[-3000:] + done.stderr.decode()[-3000:]

    report = orjson.loads(out.read_bytes())
    single = report["single_gateway"]
    rows = {entry["name"]: entry for entry in single["classes"]}
    assert set(rows) == CLASSES
    for name, entry in rows.items():
        assert entry["sent"] >= 1, name
        assert sum(entry["statuses"].values()) == entry["sent"], name
        assert entry["latency_ms"]["p50"] is not None, name
        assert entry["healthz_ms"]["polls"] > 0, name
        assert entry["memory_after"]["rss_mb"] > 0, name
    assert rows["batch-50k-lines"]["upload"]["status"] == 200
    assert single["healthz_idle_ms"]["polls"] > 10
    assert 0 < single["memory_before"]["rss_mb"] <= single["memory_after"]["peak_rss_mb"]
    assert "Abusive inputs, one gateway" in done.stdout.decode()

    if "budget_race_skipped" in report:
        reason = report["budget_race_skipped"]
        if os.environ.get("TIDEGATE_TEST_REQUIRE_POSTGRES") or os.environ.get(
            "TIDEGATE_TEST_REQUIRE_REDIS"
        ):
            pytest.fail(f"budget race skipped: {reason}")
        pytest.skip(f"PostgreSQL or Redis unreachable, budget race skipped: {reason}")
    race = report["budget_race"]
    assert [v["variant"] for v in race["variants"]] == [
        "daily 2,000, max_tokens 12",
        "daily 2,000, no max_tokens",
        "daily 2,000, no max_tokens, streamed",
        "tpm 500, max_tokens 12",
        "tpm 500, no max_tokens",
    ]
    for variant in race["variants"]:
        assert sum(variant["statuses"].values()) == 20, variant
        assert variant["usage_records"] == 20, variant  # every request metered, refusals too
        assert variant["bound_tokens"] > 0 and variant["admitted_tokens"] >= 0
        assert "overspend_pct" in variant
    assert "Budget race" in done.stdout.decode()
