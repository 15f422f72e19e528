"""`tidegate rollout` through Typer's CliRunner on a real store (SQLite and PostgreSQL), with
pool names checked against the routing table of the config."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner, Result

from tests.unit.test_tenants_cli import audit_log
from tidegate.commands.rollout import rollout_app


def invoke(home: Path, store_url: str, *args: str) -> Result:
    env = {
        "TIDEGATE_HOME": str(home),
        "TIDEGATE_STORE__URL": store_url,
        "TIDEGATE_CONFIG": None,
        "TIDEGATE_ENGINES__REPLICAS": "0",
        "TIDEGATE_UPSTREAMS": json.dumps(
            [
                {"url": "http://127.0.0.1:9/v1", "model": "m-blue", "pool": "blue"},
                {"url": "http://127.0.0.1:9/v1", "model": "m-green", "pool": "green"},
            ]
        ),
        "TIDEGATE_ROUTING__ROUTES": json.dumps([{"model": "chat", "pools": ["blue", "green"]}]),
        "COLUMNS": "200",
    }
    return CliRunner().invoke(rollout_app, list(args), env=env)  # type: ignore[arg-type]


def test_start_status_pause_resume_abort_report(tmp_path: Path, store_url: str) -> None:
    start = ["start", "--model", "chat", "--candidate", "green", "--steps", "10,50,100"]
    created = invoke(
        tmp_path,
        store_url,
        *start,
        "--hold",
        "2m",
        "--min-samples",
        "5",
        "--max-ttft-p95-ratio",
        "2",
    )
    assert created.exit_code == 0, created.output
    rollout_id = created.stdout.strip().splitlines()[0]
    assert rollout_id.startswith("ro_")

    status = invoke(tmp_path, store_url, "status", rollout_id)
    assert status.exit_code == 0, status.output
    for expected in (
        "green / blue",
        "running",
        "10% (10,50,100)",
        "120 s",
        "ttft_p95_ratio=2",
        "min_samples=5",
        "insufficient",
        "requests",
    ):
        assert expected in status.stdout, expected
    assert "running" in invoke(tmp_path, store_url, "status", "--model", "chat").stdout

    second = invoke(tmp_path, store_url, *start)
    assert second.exit_code == 1 and "already has an active rollout" in second.output

    assert invoke(tmp_path, store_url, "pause", rollout_id).exit_code == 0
    resumed = invoke(tmp_path, store_url, "resume", rollout_id)
    assert resumed.exit_code == 0 and "running" in resumed.output
    aborted = invoke(tmp_path, store_url, "abort", rollout_id)
    assert aborted.exit_code == 0 and "aborted" in aborted.output
    assert "No active rollout" in invoke(tmp_path, store_url, "status").output

    listed = invoke(tmp_path, store_url, "list")
    assert rollout_id in listed.stdout and "aborted" in listed.stdout

    out = tmp_path / "report.html"
    report = invoke(
        tmp_path, store_url, "report", rollout_id, "--format", "html", "--out", str(out)
    )
    assert report.exit_code == 0, report.output
    assert "<h2>Transitions</h2>" in out.read_text() and "aborted" in out.read_text()
    markdown = invoke(tmp_path, store_url, "report", rollout_id)
    assert "## Step 1: 10% to the candidate" in markdown.stdout

    actions = [action for action, _, actor in audit_log(store_url) if actor.startswith("cli:")]
    assert actions == ["rollout.started", "rollout.paused", "rollout.resumed", "rollout.aborted"]


def test_bad_input_is_one_line_on_stderr(tmp_path: Path, store_url: str) -> None:
    cases = [
        (["--candidate", "purple"], "No pool named 'purple'"),
        (["--candidate", "green", "--steps", "50,10"], "steps must"),
        (["--candidate", "green", "--hold", "soon"], "duration"),
    ]
    for args, message in cases:
        result = invoke(tmp_path, store_url, "start", "--model", "chat", *args)
        assert result.exit_code != 0, args
        assert message in result.output, (args, result.output)
    promoted = invoke(tmp_path, store_url, "promote", "ro_missing")
    assert promoted.exit_code == 1 and "No rollout with id" in promoted.output
