"""What a checked batch holds until its lines are stored: the file's lines, exactly sized.

Kept as ``orjson.dumps`` output, each line held a 4 KiB buffer (195 MiB for 50,000 lines), and
the gateway's RSS grew by as much with every large batch. As dataclass instances, 50,000 checked
lines added 10-60 ms to every full garbage collection (which holds the event loop)."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from pathlib import Path

import orjson

from tidegate.batch.validate import Checked, LineChecker, line_body
from tidegate.config import Config
from tidegate.pipeline.validation import ModelLimits, RequestValidator
from tidegate.routing.build import build_routing
from tidegate.tenancy.keys import Principal
from tidegate.tenancy.policy import KeySettings, TenantSettings

MODEL = "fake-model"
LINES = 2_000


def _checker(home: Path) -> LineChecker:
    config = Config(
        home=home,
        engines={"replicas": 0},
        upstreams=[{"url": "http://127.0.0.1:9/v1", "model": MODEL}],
    )
    validator = RequestValidator(
        config=config.validation,
        models={MODEL: ModelLimits(context_length=None, counter=None)},
    )
    return LineChecker(routing=build_routing(config), validator=validator, max_line_bytes=65_536)


PRINCIPAL = Principal(
    key_id="key_1",
    role="member",
    name="k",
    tenant_id="ten_1",
    tenant_name="t",
    tier="batch",
    tenant=TenantSettings(),
    key=KeySettings(),
)


def _file() -> tuple[bytes, list[dict[str, object]]]:
    bodies: list[dict[str, object]] = [
        {"model": MODEL, "messages": [{"role": "user", "content": f"hi {i}"}], "max_tokens": 4}
        for i in range(LINES)
    ]
    data = b"".join(
        orjson.dumps(
            {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": b}
        )
        + b"\n"
        for i, b in enumerate(bodies)
    )
    return data, bodies


def test_checked_lines_hold_little_more_than_the_file(tmp_path: Path) -> None:
    checker = _checker(tmp_path)
    data, _ = _file()
    tracemalloc.start()
    try:
        checked: Checked = asyncio.run(checker.check(data, "/v1/chat/completions", PRINCIPAL))
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(checked.lines) == LINES and not checked.errors
    # Each line is ~130 bytes of JSON plus its InputLine and custom_id; 4 KiB each before.
    assert held / LINES < 600, f"{held / LINES:.0f} bytes held per checked line"


def test_a_checked_line_gives_its_body_as_sent_and_a_fresh_copy_each_time(
    tmp_path: Path,
) -> None:
    data, bodies = _file()
    checked = asyncio.run(_checker(tmp_path).check(data, "/v1/chat/completions", PRINCIPAL))
    line_no, custom_id, raw = checked.lines[7]
    assert (line_no, custom_id, line_body(raw)) == (8, "r7", bodies[7])
    first = line_body(raw)
    first["max_tokens"] = 99
    assert line_body(raw) == bodies[7]


def test_checked_lines_add_nothing_to_a_full_garbage_collection(tmp_path: Path) -> None:
    data, _ = _file()
    checked = asyncio.run(_checker(tmp_path).check(data, "/v1/chat/completions", PRINCIPAL))
    gc.collect()  # untracks what holds no container, as any collection does
    assert len(checked.lines) == LINES
    assert not any(gc.is_tracked(line) for line in checked.lines)
