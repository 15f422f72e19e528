"""`tidegate usage` and `tidegate usage export` through Typer's CliRunner on a real store."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import orjson
from typer.testing import CliRunner, Result

from tests.support.usage_events import usage_event
from tidegate.commands.usage import usage_app
from tidegate.metering import UsageEvent, UsageMeter
from tidegate.store import create_engine, create_sessionmaker, migrate

EVENTS = [
    usage_event("req_a1", tenant_id="ten_a", model="m1", prompt_tokens=1200, cost_usd=0.5),
    usage_event("req_a2", tenant_id="ten_a", model="m2", key_id=None, ttft_ms=None),
    usage_event("req_b1", tenant_id="ten_b", model="m1", kind="shadow"),
]


def invoke(home: Path, store_url: str, *args: str) -> Result:
    env = {
        "TIDEGATE_HOME": str(home),
        "TIDEGATE_STORE__URL": store_url,
        "TIDEGATE_CONFIG": None,
        "COLUMNS": "200",
    }
    return CliRunner().invoke(usage_app, list(args), env=env)


def seed(store_url: str, wal: Path, events: list[UsageEvent]) -> None:
    async def run() -> None:
        await migrate(store_url)
        engine = create_engine(store_url)
        usage = UsageMeter(
            sessions=create_sessionmaker(engine), wal_dir=wal, flush_interval_s=60, batch_size=10
        )
        await usage.start()
        for event in events:
            usage.record(event)
        await usage.stop()
        await engine.dispose()

    asyncio.run(run())


def test_usage_table_per_day_and_model(tmp_path: Path, store_url: str) -> None:
    seed(store_url, tmp_path / "wal", EVENTS)
    by_day = invoke(tmp_path, store_url)
    assert by_day.exit_code == 0, by_day.output
    (row,) = [line.split() for line in by_day.stdout.splitlines() if "ten_a" in line]
    assert row == ["ten_a", "2026-11-03", "2", "1,210", "4", "10", "1,220", "0.5010"]
    assert "ten_b" not in by_day.stdout  # shadow only

    by_model = invoke(tmp_path, store_url, "--tenant", "ten_a", "--by", "model")
    assert by_model.exit_code == 0, by_model.output
    models = [line.split()[1] for line in by_model.stdout.splitlines() if "ten_a" in line]
    assert models == ["m1", "m2"]

    empty = invoke(tmp_path, store_url, "--since", "2026-11-04")
    assert empty.exit_code == 0 and "No usage recorded" in empty.stdout
    bad = invoke(tmp_path, store_url, "--until", "last week")
    assert bad.exit_code == 1 and "--until must be a date" in bad.stderr


def test_export_writes_every_record_as_csv(tmp_path: Path, store_url: str) -> None:
    seed(store_url, tmp_path / "wal", EVENTS)
    out = tmp_path / "exports" / "usage.csv"
    result = invoke(tmp_path, store_url, "export", "--out", str(out), "--until", "2026-11-03")
    assert result.exit_code == 0, result.output
    assert "Wrote 3 usage records" in result.stderr
    with out.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [r["request_id"] for r in rows] == ["req_a1", "req_a2", "req_b1"]
    first = rows[0]
    assert first["created_at"] == "2026-11-03T12:00:00+00:00"
    assert (first["tenant_id"], first["model"], first["prompt_tokens"]) == ("ten_a", "m1", "1200")
    assert float(first["cost_usd"]) == 0.5 and rows[2]["kind"] == "shadow"
    assert rows[1]["key_id"] == "" and rows[1]["ttft_ms"] == ""

    only_b = invoke(tmp_path, store_url, "export", "--out", "-", "--tenant", "ten_b")
    assert only_b.exit_code == 0, only_b.output
    assert only_b.stdout.splitlines()[1].startswith("req_b1,")


def test_usage_json_has_the_same_rows_as_the_table(tmp_path: Path, store_url: str) -> None:
    seed(store_url, tmp_path / "wal", EVENTS)
    listed = invoke(tmp_path, store_url, "--json")
    assert listed.exit_code == 0, listed.output
    rows = orjson.loads(listed.stdout)
    (row,) = [r for r in rows if r["tenant_id"] == "ten_a"]
    assert row["requests"] == 2 and row["total_tokens"] == 1220 and row["day"] == "2026-11-03"
