"""``tidegate bench run`` against tidegate itself: discovery sends the key; ``--out`` folders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from benchmarks.targets import Processes, fake_upstream_launch, free_port, tidegate_launch
from tidegate_bench.cli import bench_app


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base URL, admin key) of a real ``tidegate up`` in front of the fake upstream."""
    work = tmp_path_factory.mktemp("gateway")
    upstream_port, port = free_port(), free_port()
    with Processes(work) as procs:
        procs.start("fake", fake_upstream_launch(port=upstream_port, model="demo", tokens=4), 30)
        launch = tidegate_launch(
            upstream_base_url=f"http://127.0.0.1:{upstream_port}/v1",
            model="demo",
            port=port,
            home=work,
        )
        procs.start("tidegate", launch, 60)
        yield f"http://127.0.0.1:{port}/v1", launch.env["TIDEGATE_ADMIN_KEY"]


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    # Wide enough that Rich does not wrap the usage error mid-sentence.
    env = {"COLUMNS": "300", **(env or {})}
    done = CliRunner().invoke(
        bench_app, ["run", *args, "-n", "3", "-c", "1", "--no-progress"], env=env
    )
    return done.exit_code, done.output


def test_discovery_sends_the_api_key_and_out_may_be_a_folder(
    gateway: tuple[str, str], tmp_path: Path
) -> None:
    url, key = gateway
    code, output = _run("-t", url, "--api-key", key, "--out", str(tmp_path))
    assert code == 0, output
    [result] = tmp_path.glob("bench-*.json")
    doc = orjson.loads(result.read_bytes())
    assert doc["runs"][0]["targets"][0]["model"] == "demo"
    assert doc["runs"][0]["targets"][0]["completed"] == 3


def test_discovery_reads_openai_api_key(gateway: tuple[str, str], tmp_path: Path) -> None:
    url, key = gateway
    code, output = _run("-t", url, "--out", str(tmp_path / "r.json"), env={"OPENAI_API_KEY": key})
    assert code == 0, output
    assert (tmp_path / "r.json").is_file()


def test_without_a_key_the_error_names_the_flags(gateway: tuple[str, str], tmp_path: Path) -> None:
    url, _ = gateway
    code, output = _run("-t", url, "--out", str(tmp_path), env={"OPENAI_API_KEY": ""})
    assert code == 1
    assert "HTTP 401" in output and "--api-key" in output and "--model" in output
    assert "Traceback" not in output


def test_out_under_a_file_is_a_usage_error(gateway: tuple[str, str], tmp_path: Path) -> None:
    url, key = gateway
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, output = _run("-t", url, "--api-key", key, "--out", str(blocker / "r.json"))
    assert code == 2 and "is a file, not a folder" in output
