"""The Helm chart rendered with several values sets: every manifest schema-valid, and the things
that matter asserted (probes, vLLM args from the engine profile, GPUs, KEDA, NetworkPolicy, PDB,
graceful drain, the gateway config tidegate itself accepts)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.deploy.chart import (
    CHART,
    NAMESPACE,
    ROOT,
    Manifest,
    by_kind,
    lint_errors,
    named,
    render,
    validate,
)
from tidegate.config import Config, EngineProfile, UpstreamServer, load_config

TWO_POOLS: dict[str, Any] = {
    "secrets": {
        "adminKey": "tg-admin-0123456789",
        "postgresUrl": "postgresql+asyncpg://tg:pw@db:5432/tg",
        "redisUrl": "redis://redis:6379/0",
        "hfToken": "hf_abc",
    },
    "gateway": {
        "replicas": 3,
        "config": {"server": {"log_level": "warning"}, "limits": {"redis_timeout_s": 0.5}},
        "providers": [
            {"url": "https://api.openai.com/v1", "model": "gpt-4o-mini", "api_key": "sk-provider"}
        ],
        "autoscaling": {"enabled": True, "metric": "cpu"},
    },
    "engines": {
        "defaults": {"profile": {"enforce_eager": True}},
        "pools": [
            {
                "name": "chat",
                "model": "meta-llama/Llama-3.1-70B-Instruct",
                "servedModelName": "llama-70b",
                "priorityScheduling": True,
                "loadTimeSeconds": 1205,
                "profile": {
                    "tensor_parallel_size": 4,
                    "max_model_len": 32768,
                    "max_num_seqs": 128,
                    "gpu_memory_utilization": 0.95,
                    "enforce_eager": False,
                    "dtype": "bfloat16",
                    "extra_args": ["--enable-prefix-caching"],
                    "extra_env": {"VLLM_LOGGING_LEVEL": "DEBUG"},
                },
                "nodeSelector": {"gpu": "h100"},
                "modelCache": {"type": "pvc", "size": "500Gi"},
                "upstream": {"tokenizer": "/models/llama"},
            },
            {
                "name": "small-cpu",
                "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
                "profile": {"device": "cpu", "cpu_kvcache_space_gib": 4},
                "tolerations": [],
            },
        ],
    },
}
MULTI_NODE: dict[str, Any] = {
    "engines": {
        "pools": [
            {
                "name": "big",
                "model": "meta-llama/Llama-3.1-405B-Instruct",
                "servedModelName": "llama-405b",
                "profile": {"tensor_parallel_size": 8},
                "multiNode": {"enabled": True, "pipelineParallelSize": 2},
                "autoscaling": {"enabled": True, "min_replicas": 1, "max_replicas": 2},
            }
        ]
    }
}
SHARED_STORES: dict[str, Any] = {
    "redisUrl": "redis://redis:6379/0",
    "postgresUrl": "postgresql+asyncpg://tg:pw@db:5432/tg",
}
KEDA_ON: dict[str, Any] = {
    "engines": {"defaults": {"autoscaling": {"enabled": True}}},
    "gateway": {"autoscaling": {"enabled": True}},
    "secrets": SHARED_STORES,
    "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
}
KEDA_OFF: dict[str, Any] = {
    "engines": {"defaults": {"autoscaling": {"enabled": False}}},
    "networkPolicy": {"enabled": False},
    "gateway": {"podDisruptionBudget": {"enabled": False}},
    "metrics": {"grafanaDashboard": {"enabled": False}},
}
EXISTING_SECRET: dict[str, Any] = {
    "gateway": {"replicas": 3},
    "secrets": {"create": False, "existingSecret": "tidegate-prod"},
}
VALUE_SETS = {
    "defaults": {},
    "two-pools": TWO_POOLS,
    "multi-node": MULTI_NODE,
    "keda-on": KEDA_ON,
    "keda-off": KEDA_OFF,
    "existing-secret": EXISTING_SECRET,
}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Manifest]]:
    return {name: render(values) for name, values in VALUE_SETS.items()}


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_every_manifest_is_schema_valid_and_lint_clean(
    name: str, rendered: dict[str, list[Manifest]]
) -> None:
    manifests = rendered[name]
    assert manifests
    for manifest in manifests:
        validate(manifest)
    assert lint_errors(VALUE_SETS[name]) == []


def _container(deployment: Manifest) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _arg(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def test_engine_args_resources_and_probes_come_from_the_profile(
    rendered: dict[str, list[Manifest]],
) -> None:
    manifests = rendered["two-pools"]
    chat = named(manifests, "Deployment", "tg-tidegate-engine-chat")
    vllm = _container(chat)
    args = vllm["args"]
    assert _arg(args, "--model") == "meta-llama/Llama-3.1-70B-Instruct"
    assert _arg(args, "--served-model-name") == "llama-70b"
    assert _arg(args, "--max-model-len") == "32768"
    assert _arg(args, "--max-num-seqs") == "128"
    assert _arg(args, "--gpu-memory-utilization") == "0.95"
    assert _arg(args, "--tensor-parallel-size") == "4"
    assert _arg(args, "--dtype") == "bfloat16"
    assert _arg(args, "--scheduling-policy") == "priority"
    assert "--enforce-eager" not in args  # the pool's false beats the default's true
    assert args[-1] == "--enable-prefix-caching"
    env = {e["name"]: e for e in vllm["env"]}
    assert env["VLLM_LOGGING_LEVEL"]["value"] == "DEBUG"
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert vllm["resources"]["requests"]["nvidia.com/gpu"] == 4
    pod = chat["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu": "h100"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert chat["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

    startup = vllm["startupProbe"]
    assert startup["httpGet"]["path"] == "/health"
    budget = startup["failureThreshold"] * startup["periodSeconds"]
    assert 1205 <= budget <= 1205 + 2 * startup["periodSeconds"]
    assert vllm["readinessProbe"]["httpGet"]["path"] == "/health"
    assert vllm["livenessProbe"]["httpGet"]["path"] == "/health"

    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = volumes["model-cache"]["persistentVolumeClaim"]["claimName"]
    pvc = named(manifests, "PersistentVolumeClaim", claim)
    assert pvc["spec"]["resources"]["requests"]["storage"] == "500Gi"

    cpu = _container(named(manifests, "Deployment", "tg-tidegate-engine-small-cpu"))
    assert "nvidia.com/gpu" not in cpu["resources"].get("limits", {})
    assert "--gpu-memory-utilization" not in cpu["args"]
    assert "--enforce-eager" in cpu["args"]  # the default applies where the pool says nothing
    assert {"name": "VLLM_CPU_KVCACHE_SPACE", "value": "4"} in cpu["env"]
    assert (
        "emptyDir" in {v["name"]: v for v in _pod(manifests, "small-cpu")["volumes"]}["model-cache"]
    )


def _pod(manifests: list[Manifest], pool: str) -> dict[str, Any]:
    spec: dict[str, Any] = named(manifests, "Deployment", f"tg-tidegate-engine-{pool}")["spec"]
    return spec["template"]["spec"]  # type: ignore[no-any-return]


def test_default_pools_are_interactive_and_batch(rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["defaults"]
    names = {m["metadata"]["name"] for m in by_kind(manifests, "Deployment")}
    assert names == {
        "tg-tidegate-gateway",
        "tg-tidegate-engine-interactive",
        "tg-tidegate-engine-batch",
    }
    for pool in ("interactive", "batch"):
        service = named(manifests, "Service", f"tg-tidegate-engine-{pool}")
        assert service["spec"]["clusterIP"] == "None"  # headless: DNS lists every pod
    interactive = _container(named(manifests, "Deployment", "tg-tidegate-engine-interactive"))
    batch = _container(named(manifests, "Deployment", "tg-tidegate-engine-batch"))
    assert _arg(interactive["args"], "--scheduling-policy") == "priority"
    assert "--scheduling-policy" not in batch["args"]
    assert _arg(batch["args"], "--max-num-seqs") == "256"


def test_gateway_drains_gracefully_and_probes_health(rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["defaults"]
    gateway = named(manifests, "Deployment", "tg-tidegate-gateway")
    pod = gateway["spec"]["template"]["spec"]
    container = _container(gateway)
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "10"]
    assert pod["terminationGracePeriodSeconds"] == 10 + 60 + 10
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # Not /readyz: a Redis, PostgreSQL or pool outage every gateway shares would empty the Service.
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["resources"]["limits"]["memory"] == "1Gi"
    assert gateway["spec"]["replicas"] == 1
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert set(env) >= {"TIDEGATE_ADMIN_KEY", "TIDEGATE_STORE__URL", "TIDEGATE_LIMITS__REDIS_URL"}
    assert all(ref["optional"] for ref in env.values())  # one gateway runs on SQLite and memory
    # One gateway gets no PDB (minAvailable 1 would block every node drain); several get one
    # that lets one go at a time.
    assert by_kind(manifests, "PodDisruptionBudget") == []
    pdb = named(rendered["keda-on"], "PodDisruptionBudget", "tg-tidegate-gateway")
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"
    assert by_kind(rendered["keda-off"], "PodDisruptionBudget") == []


def _config(manifests: list[Manifest], tmp_path: Path) -> Config:
    text = named(manifests, "ConfigMap", "tg-tidegate-gateway")["data"]["config.yaml"]
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_config(path)


def test_gateway_config_is_what_tidegate_accepts(
    rendered: dict[str, list[Manifest]], tmp_path: Path
) -> None:
    config = _config(rendered["defaults"], tmp_path)
    assert config.engines.replicas == 0 and config.server.host == "0.0.0.0"
    assert [(u.model, u.discovery, u.max_concurrency) for u in config.upstreams] == [
        ("qwen2.5-7b-instruct", "dns", 64),
        ("qwen2.5-7b-instruct-batch", "dns", 256),
    ]
    assert config.upstreams[0].url == (
        f"http://tg-tidegate-engine-interactive.{NAMESPACE}.svc.cluster.local:8000/v1"
    )
    assert config.limits.backend == "memory"
    assert config.scheduling.cluster.mode == "auto"  # off with the memory backend: one gateway


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"gateway": {"replicas": 2}},
            r"gateway.replicas is 2, but secrets.redisUrl and secrets.postgresUrl are empty: "
            r".*each admits every pool's full capacity.* Set secrets.redisUrl and "
            r"secrets.postgresUrl, or run one gateway",
        ),
        (
            {"gateway": {"autoscaling": {"enabled": True}}},
            r"gateway.autoscaling.enabled is true \(minReplicas 2\), but secrets.redisUrl and "
            r"secrets.postgresUrl are empty",
        ),
        (
            {"gateway": {"replicas": 3}, "secrets": {"redisUrl": "redis://redis:6379/0"}},
            r"gateway.replicas is 3, but secrets.postgresUrl is empty: .* Set secrets.postgresUrl,",
        ),
        (
            {
                "gateway": {"autoscaling": {"enabled": True, "minReplicas": 1}},
                "secrets": {"postgresUrl": SHARED_STORES["postgresUrl"]},
            },
            r"minReplicas 1\), but secrets.redisUrl is empty: .* Set secrets.redisUrl,",
        ),
        (
            {
                "gateway": {"replicas": 2, "config": {"limits": {"backend": "memory"}}},
                "secrets": SHARED_STORES,
            },
            r'gateway.config.limits.backend is "memory": several gateways must share',
        ),
        (
            {
                "gateway": {"replicas": 2, "config": {"scheduling": {"cluster": {"mode": "off"}}}},
                "secrets": SHARED_STORES,
            },
            r'gateway.config.scheduling.cluster.mode is "off"',
        ),
        (
            {
                "gateway": {"autoscaling": {"enabled": True, "maxReplicas": 10}},
                "secrets": SHARED_STORES,
                "engines": {"pools": [{"name": "p", "model": "m", "profile": {"max_num_seqs": 8}}]},
            },
            r'gateway.autoscaling.maxReplicas is 10, but model "m" admits 8 requests at a time '
            r"per replica .* beyond 8 get a share of 0",
        ),
        (
            {
                "gateway": {
                    "replicas": 3,
                    "providers": [{"url": "https://x/v1", "model": "gpt", "max_concurrency": 2}],
                },
                "secrets": SHARED_STORES,
            },
            r'gateway.replicas is 3, but model "gpt" admits 2 .* or max_concurrency \(a provider\)',
        ),
    ],
)
def test_several_gateways_without_shared_stores_are_refused(
    values: dict[str, Any], message: str
) -> None:
    """Each gateway would admit every pool's full capacity and keep its own limits, budgets and
    SQLite store: the chart fails instead of rendering that."""
    with pytest.raises(helm.HelmError, match=message):
        render(values)


@pytest.mark.parametrize(
    "values",
    [
        {"gateway": {"replicas": 4}, "secrets": SHARED_STORES},
        {"gateway": {"autoscaling": {"enabled": True, "metric": "cpu"}}, "secrets": SHARED_STORES},
        # The chart cannot read an existing Secret: the pods require its two keys instead.
        EXISTING_SECRET,
    ],
)
def test_several_gateways_share_redis_and_postgresql(
    values: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = render(values)
    container = _container(named(manifests, "Deployment", "tg-tidegate-gateway"))
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    secret_name = values["secrets"].get("existingSecret") or "tg-tidegate-secrets"
    for key in ("TIDEGATE_STORE__URL", "TIDEGATE_LIMITS__REDIS_URL"):
        assert refs[key] == {"name": secret_name, "key": key, "optional": False}
    assert refs["TIDEGATE_ADMIN_KEY"]["optional"] is True
    monkeypatch.setenv("TIDEGATE_STORE__URL", SHARED_STORES["postgresUrl"])
    monkeypatch.setenv("TIDEGATE_LIMITS__REDIS_URL", SHARED_STORES["redisUrl"])
    config = _config(manifests, tmp_path)
    # limits.backend redis turns on scheduling.cluster (auto): pools' capacity is shared too.
    assert config.limits.backend == "redis" and config.scheduling.cluster.mode == "auto"
    assert config.store.url.startswith("postgresql+asyncpg://")
    pdb = named(manifests, "PodDisruptionBudget", "tg-tidegate-gateway")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert lint_errors(values) == []


def test_one_gateway_with_redis_shares_it_and_a_pdb_can_keep_pods_up(tmp_path: Path) -> None:
    one = render({"secrets": {"redisUrl": SHARED_STORES["redisUrl"]}})
    assert _config(one, tmp_path).limits.backend == "redis"
    assert by_kind(one, "PodDisruptionBudget") == []
    # An existing Secret with one gateway: the chart cannot tell whether it holds a Redis URL.
    alone = render({"secrets": {"create": False, "existingSecret": "s"}})
    assert _config(alone, tmp_path).limits.backend == "memory"
    kept = render(
        {
            "gateway": {"replicas": 3, "podDisruptionBudget": {"minAvailable": 2}},
            "secrets": SHARED_STORES,
        }
    )
    spec = named(kept, "PodDisruptionBudget", "tg-tidegate-gateway")["spec"]
    assert spec["minAvailable"] == 2 and "maxUnavailable" not in spec
    validate(named(kept, "PodDisruptionBudget", "tg-tidegate-gateway"))


def test_provider_keys_stay_in_the_secret(
    rendered: dict[str, list[Manifest]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = rendered["two-pools"]
    configmap = named(manifests, "ConfigMap", "tg-tidegate-gateway")["data"]["config.yaml"]
    assert "sk-provider" not in configmap and "upstreams" not in yaml.safe_load(configmap)
    secret = named(manifests, "Secret", "tg-tidegate-secrets")["stringData"]
    assert secret["TIDEGATE_STORE__URL"].startswith("postgresql+asyncpg://")
    for key, value in secret.items():
        monkeypatch.setenv(key, value)
    config = _config(manifests, tmp_path)
    assert config.limits.backend == "redis" and config.limits.redis_timeout_s == 0.5
    assert config.server.log_level == "warning"
    assert config.admin_key is not None
    assert [u.model for u in config.upstreams] == [
        "llama-70b",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "gpt-4o-mini",
    ]
    chat, _, provider = config.upstreams
    assert (chat.discovery, chat.max_concurrency, chat.context_length) == ("dns", 128, 32768)
    assert chat.tokenizer == "/models/llama"
    assert provider.api_key is not None and provider.api_key.get_secret_value() == "sk-provider"
    for entry in json.loads(secret["TIDEGATE_UPSTREAMS"]):
        UpstreamServer.model_validate(entry)


def test_gateway_hpa_scales_on_request_rate_or_cpu(rendered: dict[str, list[Manifest]]) -> None:
    (on_rate,) = by_kind(rendered["keda-on"], "HorizontalPodAutoscaler")
    metric = on_rate["spec"]["metrics"][0]
    assert metric["pods"]["metric"]["name"] == "tidegate_requests_per_second"
    (on_cpu,) = by_kind(rendered["two-pools"], "HorizontalPodAutoscaler")
    assert on_cpu["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert by_kind(rendered["defaults"], "HorizontalPodAutoscaler") == []


def test_only_the_gateway_reaches_the_engines(rendered: dict[str, list[Manifest]]) -> None:
    policy = named(rendered["defaults"], "NetworkPolicy", "tg-tidegate-engine-interactive")
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"]["tidegate.io/pool"] == "interactive"
    assert spec["policyTypes"] == ["Ingress"]
    (rule,) = spec["ingress"]
    sources = rule["from"]
    assert sources[0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"
    assert sources[1]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert by_kind(rendered["keda-off"], "NetworkPolicy") == []
    # Multi-node: the leader and workers of a pool also talk to each other (Ray).
    (multi,) = [
        p
        for p in by_kind(rendered["multi-node"], "NetworkPolicy")
        if p["metadata"]["labels"]["app.kubernetes.io/component"] == "engine"
    ]
    assert len(multi["spec"]["ingress"]) == 2


def test_prometheus_scrapes_the_gateway_s_metrics_listener_only(
    rendered: dict[str, list[Manifest]], tmp_path: Path
) -> None:
    manifests = rendered["keda-on"]
    config = _config(manifests, tmp_path)
    assert (config.server.metrics_host, config.server.metrics_port) == ("0.0.0.0", 9464)
    gateway = named(manifests, "Deployment", "tg-tidegate-gateway")
    ports = {p["name"]: p["containerPort"] for p in _container(gateway)["ports"]}
    assert ports == {"http": 8080, "metrics": 9464}
    annotations = gateway["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9464"
    # Clients' Service has no metrics port; the metrics Service has only that one.
    client = named(manifests, "Service", "tg-tidegate-gateway")
    assert [p["name"] for p in client["spec"]["ports"]] == ["http"]
    metrics = named(manifests, "Service", "tg-tidegate-gateway-metrics")
    assert metrics["spec"]["type"] == "ClusterIP"
    assert metrics["spec"]["ports"] == [
        {"name": "metrics", "port": 9464, "targetPort": "metrics", "protocol": "TCP"}
    ]
    monitor = named(manifests, "ServiceMonitor", "tg-tidegate-gateway")
    selected = monitor["spec"]["selector"]["matchLabels"]
    assert selected.items() <= metrics["metadata"]["labels"].items()
    assert not selected.items() <= client["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    # With network policies on, only the metrics namespace reaches the metrics port.
    policy = named(rendered["defaults"], "NetworkPolicy", "tg-tidegate-gateway")
    api, scrape = policy["spec"]["ingress"]
    assert api == {"ports": [{"port": "http", "protocol": "TCP"}]}
    assert scrape["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert scrape["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]


def test_multi_node_pool_is_a_leader_worker_set(rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["multi-node"]
    assert [m["metadata"]["name"] for m in by_kind(manifests, "Deployment")] == [
        "tg-tidegate-gateway"
    ]
    lws = named(manifests, "LeaderWorkerSet", "tg-tidegate-engine-big")["spec"]
    template = lws["leaderWorkerTemplate"]
    assert template["size"] == 2
    assert lws["rolloutStrategy"]["rollingUpdateConfiguration"]["maxUnavailable"] == 0
    leader = template["leaderTemplate"]["spec"]["containers"][0]
    worker = template["workerTemplate"]["spec"]["containers"][0]
    assert _arg(leader["args"], "--tensor-parallel-size") == "8"
    assert _arg(leader["args"], "--pipeline-parallel-size") == "2"
    assert _arg(leader["args"], "--distributed-executor-backend") == "ray"
    assert "leader --ray_cluster_size=$(LWS_GROUP_SIZE)" in leader["command"][2]
    assert "worker --ray_address=$(LWS_LEADER_ADDRESS)" in worker["command"][2]
    assert leader["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert leader["startupProbe"]["httpGet"]["path"] == "/health"
    service = named(manifests, "Service", "tg-tidegate-engine-big")
    assert service["spec"]["selector"]["tidegate.io/role"] == "leader"
    (scaled,) = by_kind(manifests, "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["kind"] == "LeaderWorkerSet"


def test_monitoring_resources(rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["keda-on"]
    monitors = {m["metadata"]["name"]: m for m in by_kind(manifests, "ServiceMonitor")}
    assert set(monitors) == {"tg-tidegate-gateway", "tg-tidegate-engines"}
    assert monitors["tg-tidegate-engines"]["spec"]["endpoints"][0]["path"] == "/metrics"
    (rule,) = by_kind(manifests, "PrometheusRule")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert alerts >= {
        "TidegateHighErrorRate",
        "TidegateTTFTP95High",
        "TidegatePoolSaturated",
        "TidegateEngineQueueGrowing",
        "TidegateReplicaDown",
        "TidegateNoReadyReplica",
        "TidegateKVCacheSaturated",
        "TidegateDependencyDown",
    }
    dashboard = named(manifests, "ConfigMap", "tg-tidegate-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = (ROOT / "deploy" / "grafana" / "tidegate.json").read_text()
    assert json.loads(dashboard["data"]["tidegate.json"]) == json.loads(shipped)
    assert by_kind(rendered["keda-off"], "ConfigMap")[0]["metadata"]["name"] == (
        "tg-tidegate-gateway"
    )


def test_alert_file_is_the_chart_rule_with_default_thresholds() -> None:
    (rule,) = by_kind(render({"metrics": {"prometheusRule": {"enabled": True}}}), "PrometheusRule")
    shipped = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text())
    assert shipped == rule["spec"]


def test_startup_budget_rounds_up() -> None:
    values = {"engines": {"defaults": {"loadTimeSeconds": 61}}}
    probe = _container(named(render(values), "Deployment", "tg-tidegate-engine-batch"))[
        "startupProbe"
    ]
    assert probe["failureThreshold"] * probe["periodSeconds"] >= 61
    assert probe["failureThreshold"] == math.ceil(61 / 10) + 1


@pytest.mark.parametrize(
    ("pools", "message"),
    [
        ([{"name": "Bad_Name", "model": "m"}], "must be a DNS label"),
        ([{"name": "a", "model": "m"}, {"name": "a", "model": "n"}], "used twice"),
        ([{"name": "a"}], "model is required"),
    ],
)
def test_bad_pools_are_refused(pools: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(helm.HelmError, match=message):
        render({"engines": {"pools": pools}})


def test_chart_has_a_readme_row_for_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def keys(node: Any, prefix: str = "") -> list[str]:
        if isinstance(node, dict) and node and prefix not in _LEAF_MAPS:
            return [k for key, v in node.items() for k in keys(v, f"{prefix}{key}.")]
        return [prefix.rstrip(".")]

    missing = [key for key in keys(values) if f"`{key}`" not in readme]
    assert missing == []


# Maps that are values in their own right (documented as one row), not sections.
_LEAF_MAPS = {
    "gateway.resources.",
    "gateway.config.",
    "engines.defaults.resources.",
    "engines.defaults.profile.",
    "networkPolicy.metricsNamespaceSelector.",
}


def test_a_tidegate_engine_profile_drops_into_a_pool() -> None:
    """`tidegate plan` writes an EngineProfile; every one of its keys is a pool profile key."""
    profile = EngineProfile(
        device="cuda",
        max_model_len=2048,
        max_num_seqs=8,
        tensor_parallel_size=2,
        enforce_eager=True,
    ).model_dump(mode="json")
    assert set(profile) == set(
        yaml.safe_load((CHART / "values.yaml").read_text())["engines"]["defaults"]["profile"]
    )
    manifests = render({"engines": {"pools": [{"name": "p", "model": "m", "profile": profile}]}})
    for manifest in manifests:
        validate(manifest)
    args = _container(named(manifests, "Deployment", "tg-tidegate-engine-p"))["args"]
    assert _arg(args, "--max-num-seqs") == "8" and "--enforce-eager" in args
