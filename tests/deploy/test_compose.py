"""The single-host stack: the compose file parsed by docker-compose (Debian's package; no daemon
needed), the gateway config it mounts, Prometheus and Grafana provisioning, the Dockerfile."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.chart import ROOT
from tidegate.config import load_config

DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("TIDEGATE_TEST_REQUIRE_COMPOSE"):
            pytest.fail("docker-compose is not installed (apt-get install docker-compose)")
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    result = subprocess.run(
        [binary, "--env-file", ".env.example", "-f", "docker-compose.yaml", "config"],
        cwd=COMPOSE,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def test_stack_has_every_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"gateway", "vllm", "redis", "postgres", "prometheus", "grafana"}
    gateway = services["gateway"]
    assert gateway["build"]["dockerfile"] == "deploy/Dockerfile"
    assert gateway["environment"]["TIDEGATE_LIMITS__REDIS_URL"] == "redis://redis:6379/0"
    assert gateway["environment"]["TIDEGATE_STORE__URL"].startswith("postgresql+asyncpg://")


def test_engine_reserves_a_gpu_and_waits_for_the_model(compose: dict[str, Any]) -> None:
    vllm = compose["services"]["vllm"]
    assert vllm["image"].startswith("vllm/vllm-openai:")
    (device,) = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert str(device["count"]) == "1"
    command = vllm["command"]
    assert command[command.index("--max-num-seqs") + 1] == "64"
    assert command[command.index("--scheduling-policy") + 1] == "priority"
    assert vllm["healthcheck"]["start_period"] in ("900s", "15m")


def test_mounted_files_exist_and_gateway_config_is_valid(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith("/"):
                assert Path(source).exists(), f"{name} mounts missing {source}"
    config = load_config(COMPOSE / "tidegate.yaml")
    (upstream,) = config.upstreams
    assert upstream.discovery == "dns" and upstream.url == "http://vllm:8000/v1"
    assert config.engines.replicas == 0 and config.limits.backend == "redis"
    assert (config.server.metrics_host, config.server.metrics_port) == ("0.0.0.0", 9464)


def test_prometheus_scrapes_gateway_and_engine_and_loads_alerts() -> None:
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in prometheus["scrape_configs"]
    }
    # The gateway's metrics listener (no token; the compose file does not publish its port).
    assert targets == {"tidegate": ["gateway:9464"], "vllm": ["vllm:8000"]}
    assert prometheus["rule_files"] == ["/etc/prometheus/alerts.yaml"]


def test_grafana_provisions_the_dashboard() -> None:
    provisioning = COMPOSE / "grafana" / "provisioning"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "tidegate.yaml").read_text())[
        "providers"
    ]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


def test_dockerfile_is_slim_non_root_without_torch() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "FROM python:3.12-slim" in text
    assert "USER 10001" in text and "torch" not in text.replace("no torch", "")
    assert 'CMD ["up", "--config", "/etc/tidegate/config.yaml"]' in text
