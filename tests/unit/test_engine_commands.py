"""`tidegate engine status`, `engine install` and `model prepare` through Typer's runner."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from typer.testing import CliRunner

from tidegate.commands.engine import engine_app, model_app, status_table
from tidegate.config import Config
from tidegate.engines.state_file import (
    STATE_FILE_NAME,
    EngineSnapshot,
    ReplicaRecord,
    read_state,
    write_state,
)


def record(**changes: object) -> ReplicaRecord:
    base = ReplicaRecord(
        id="r0",
        pool="smol",
        model="smol",
        state="ready",
        port=8001,
        pid=os.getpid(),
        started_at=100.0,
        ready_at=130.0,
        load_seconds=30.0,
        restarts=2,
        log="/logs/replica-r0.log",
    )
    return ReplicaRecord(**{**base.__dict__, **changes})


def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "tidegate.yaml"
    path.write_text(f"home: {tmp_path / 'home'}\n")
    return path


def test_state_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "engines.json"
    snapshot = EngineSnapshot(
        supervisor_pid=1, updated_at=5.0, replicas=(record(), record(id="r1", pid=None))
    )
    write_state(path, snapshot)
    assert read_state(path) == snapshot
    assert read_state(tmp_path / "missing.json") is None


def test_a_state_file_from_before_pools_reads_as_the_main_pool(tmp_path: Path) -> None:
    path = tmp_path / "engines.json"
    write_state(path, EngineSnapshot(supervisor_pid=1, updated_at=5.0, replicas=(record(),)))
    data = json.loads(path.read_text())
    del data["replicas"][0]["pool"]
    path.write_text(json.dumps(data))
    snapshot = read_state(path)
    assert snapshot is not None and snapshot.replicas[0].pool == "smol"


def test_status_table_shows_liveness_uptime_and_load() -> None:
    snapshot = EngineSnapshot(
        supervisor_pid=1,
        updated_at=0,
        replicas=(
            record(),
            record(id="r1", state="crashed", pid=None, ready_at=None),
            record(id="canary-r0", pool="canary"),
        ),
    )
    table = status_table(snapshot, now=130.0 + 3725)
    cells = [[str(c) for c in column.cells] for column in table.columns]
    rows = list(zip(*cells, strict=True))
    assert table.title == "tidegate engines: smol"
    assert rows[0][:8] == (
        "r0",
        "smol",
        "ready",
        "8001",
        f"{os.getpid()} (alive)",
        "1h02m",
        "30.0s",
        "2",
    )
    assert rows[1][2:6] == ("crashed", "8001", "-", "-")
    assert rows[2][:3] == ("canary-r0", "canary", "ready")


def test_status_command_reads_the_state_file(tmp_path: Path) -> None:
    path = config_file(tmp_path)
    config = Config(home=tmp_path / "home")
    runner = CliRunner()
    missing = runner.invoke(engine_app, ["status", "--config", str(path)])
    assert missing.exit_code == 1 and "No engine state" in missing.output
    write_state(
        config.state_dir / STATE_FILE_NAME,
        EngineSnapshot(supervisor_pid=os.getpid(), updated_at=time.time(), replicas=(record(),)),
    )
    shown = runner.invoke(engine_app, ["status", "--config", str(path)], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert "r0" in shown.output and "ready" in shown.output and "(alive)" in shown.output


def test_prepare_with_a_local_directory(tmp_path: Path) -> None:
    model_dir = tmp_path / "my-model"
    model_dir.mkdir()
    runner = CliRunner()
    args = ["--config", str(config_file(tmp_path)), "--model", str(model_dir)]
    failed = runner.invoke(model_app, ["prepare", *args])
    assert failed.exit_code == 1 and "config.json" in failed.output
    (model_dir / "config.json").write_text("{}")
    done = runner.invoke(model_app, ["prepare", *args])
    assert done.exit_code == 0, done.output


def test_missing_config_file_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(engine_app, ["install", "--config", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "cannot load config" in result.output


def test_status_piped_keeps_each_replica_on_one_line_and_has_json(tmp_path: Path) -> None:
    # Off a terminal Rich used to fit the table into 80 columns and wrap every cell.
    path = config_file(tmp_path)
    config = Config(home=tmp_path / "home")
    log = "/a/rather/long/home/directory/.cache/tidegate/logs/replica-main-r0.log"
    write_state(
        config.state_dir / STATE_FILE_NAME,
        EngineSnapshot(
            supervisor_pid=os.getpid(),
            updated_at=time.time(),
            replicas=(record(id="main-r0", pool="main", log=log),),
        ),
    )
    env = {"COLUMNS": None}
    shown = CliRunner().invoke(engine_app, ["status", "--config", str(path)], env=env)
    assert shown.exit_code == 0, shown.output
    (row,) = [line for line in shown.stdout.splitlines() if "main-r0" in line]
    assert log in row and "ready" in row and "(alive)" in row
    as_json = CliRunner().invoke(engine_app, ["status", "--json", "--config", str(path)])
    data = json.loads(as_json.stdout)
    assert data["supervisor_alive"] is True
    assert data["replicas"][0]["log"] == log and data["replicas"][0]["load_seconds"] == 30.0
