"""One scaling policy, two executors: the block tidegate's config takes for a pool
(AutoscalingPolicy, executed by the local supervisor and the simulator) renders as the KEDA
ScaledObject of the same pool, and that object is valid against KEDA's own CRD schema."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import pytest
import yaml

from tests.deploy.chart import CHART, Manifest, by_kind, named, render, validate
from tidegate.autoscaling.policy import ScalingDecider, effective_target
from tidegate.config import AutoscalingPolicy, load_config

POOL = {"name": "chat", "model": "org/chat-model", "servedModelName": "chat-model"}


def _values(block: dict[str, Any], gateway_config: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "engines": {"pools": [{**POOL, "autoscaling": block}]},
        "gateway": {"config": gateway_config or {}},
    }


def _scaled_object(manifests: list[Manifest]) -> Manifest:
    return named(manifests, "ScaledObject", "tg-tidegate-engine-chat")


def _gateway_config_file(manifests: list[Manifest], tmp_path: Path) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(named(manifests, "ConfigMap", "tg-tidegate-gateway")["data"]["config.yaml"])
    return path


# Each case: the policy as a laptop config has it (YAML, pasted verbatim into the pool's values)
# and the scheduling section both the laptop config and gateway.config carry.
POLICIES: dict[str, tuple[str, dict[str, Any]]] = {
    "tidegate-defaults": ("enabled: true\n", {}),
    "prescale-on-the-ttft-target": (
        """
        enabled: true
        min_replicas: 1
        max_replicas: 4
        signal: predicted_wait
        target: 9.0
        prescale_fraction: 0.25
        """,
        {"scheduling": {"interactive": {"ttft_target_s": 3.0}}},
    ),
    "prescale-on-tidegate-s-default-ttft": (
        "enabled: true\nsignal: predicted_wait\nprescale_fraction: 0.3\n",
        {},
    ),
    "predicted-wait-class-without-ttft": (
        "enabled: true\nsignal: predicted_wait\ntarget: 1.5\n",
        {"scheduling": {"interactive": {"max_queue_depth": 32}}},
    ),
    "predicted-wait-ttft-null": (
        "enabled: true\nsignal: predicted_wait\ntarget: 2.5\n",
        {"scheduling": {"interactive": {"ttft_target_s": None}}},
    ),
    "standby-fractional-windows": (
        """
        enabled: true
        min_replicas: 1
        max_replicas: 3
        warm_standby: 1
        signal: queue_depth
        target: 4.5
        scale_up_stabilization_s: 2.5
        scale_down_stabilization_s: 30.2
        cooldown_s: 0
        idle_scale_to_min_s: 0
        evaluation_interval_s: 0.5
        """,
        {},
    ),
    "scale-to-zero": (
        """
        enabled: true
        min_replicas: 0
        max_replicas: 2
        target: 256
        cooldown_s: 45
        evaluation_interval_s: 15
        idle_scale_to_min_s: 600
        """,
        {},
    ),
}


@pytest.mark.parametrize("case", list(POLICIES))
def test_one_policy_renders_as_the_scaled_object_tidegate_would_execute(
    case: str, tmp_path: Path
) -> None:
    text, scheduling = POLICIES[case]
    block = yaml.safe_load(text.replace("\n        ", "\n"))
    # Executor 1: tidegate loads the block as a pool's policy next to its scheduling section.
    laptop = tmp_path / "laptop.yaml"
    laptop.write_text(yaml.safe_dump({"engines": {"autoscaling": block}, **scheduling}))
    config = load_config(laptop)
    policy = config.engines.autoscaling
    ttft = config.scheduling.interactive.ttft_target_s
    decider = ScalingDecider(policy, target=effective_target(policy, ttft))
    # Executor 2: the same block in Helm values, the same scheduling in gateway.config.
    manifests = render(_values(block, scheduling))
    scaled = _scaled_object(manifests)
    validate(scaled)
    gateway = load_config(_gateway_config_file(manifests, tmp_path))
    assert gateway.scheduling.interactive.ttft_target_s == ttft
    spec = scaled["spec"]
    poll = max(1, math.ceil(policy.evaluation_interval_s))
    assert spec["minReplicaCount"] == policy.min_replicas + policy.warm_standby
    assert spec["maxReplicaCount"] == policy.max_replicas
    assert spec["pollingInterval"] == poll
    (trigger,) = spec["triggers"]
    assert (trigger["type"], trigger["metricType"]) == ("prometheus", "Value")
    # Per-replica counts add up over gateways (each exports its share); a wait does not.
    aggregate = "max" if policy.signal == "predicted_wait" else "sum"
    assert trigger["metadata"]["query"] == (
        f'{aggregate}(tidegate_pool_scaling_signal{{pool="chat-model",signal="{policy.signal}"}})'
    )
    # Helm multiplies in decimal, Python in binary floating point: equal to the last digits.
    assert float(trigger["metadata"]["threshold"]) == pytest.approx(decider.target, rel=1e-12)
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    up, down = behavior["scaleUp"], behavior["scaleDown"]
    assert up["stabilizationWindowSeconds"] == math.ceil(policy.scale_up_stabilization_s)
    assert down["stabilizationWindowSeconds"] == math.ceil(policy.scale_down_stabilization_s)
    # Up: as far as the recommendation says in one step; down: one pod per cooldown.
    assert up["policies"] == [{"type": "Pods", "value": policy.max_replicas, "periodSeconds": poll}]
    assert down["policies"] == [
        {"type": "Pods", "value": 1, "periodSeconds": max(poll, math.ceil(policy.cooldown_s))}
    ]
    idle = math.ceil(policy.idle_scale_to_min_s)
    assert spec["cooldownPeriod"] == (
        idle or max(math.ceil(policy.scale_down_stabilization_s), math.ceil(policy.cooldown_s))
    )
    # The object names the policy it came from, which tidegate reads back unchanged.
    source = json.loads(scaled["metadata"]["annotations"]["tidegate.io/autoscaling-policy"])
    assert AutoscalingPolicy.model_validate(source) == policy


def test_warm_standby_raises_the_floor_since_keda_has_none() -> None:
    block = {"enabled": True, "min_replicas": 2, "max_replicas": 3, "warm_standby": 1}
    spec = _scaled_object(render(_values(block)))["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (3, 3)


def test_the_query_names_the_gateway_s_pool() -> None:
    """The gateway names a pool after its upstream entry: `pool` when set, else the model."""
    values = _values({"enabled": True, "signal": "queue_depth"})
    values["engines"]["pools"][0]["upstream"] = {"pool": 'chat"primary'}
    (trigger,) = _scaled_object(render(values))["spec"]["triggers"]
    assert trigger["metadata"]["query"] == (
        'sum(tidegate_pool_scaling_signal{pool="chat\\"primary",signal="queue_depth"})'
    )


def test_chart_defaults_are_tidegate_s_defaults() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["engines"]["defaults"]["autoscaling"] == AutoscalingPolicy().model_dump()


def test_default_pools_scale_when_enabled() -> None:
    manifests = render({"engines": {"defaults": {"autoscaling": {"enabled": True}}}})
    scaled = {m["metadata"]["name"]: m["spec"] for m in by_kind(manifests, "ScaledObject")}
    assert set(scaled) == {"tg-tidegate-engine-interactive", "tg-tidegate-engine-batch"}
    interactive = scaled["tg-tidegate-engine-interactive"]
    batch = scaled["tg-tidegate-engine-batch"]
    # interactive: prescale at half of tidegate's default 2 s TTFT target.
    assert interactive["triggers"][0]["metadata"]["threshold"] == "1"
    assert (batch["minReplicaCount"], batch["maxReplicaCount"]) == (0, 2)
    assert batch["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "tg-tidegate-engine-batch",
    }
    # With KEDA in charge the Deployment leaves replicas to it.
    assert "replicas" not in named(manifests, "Deployment", "tg-tidegate-engine-batch")["spec"]
    assert by_kind(render(), "ScaledObject") == []


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"minReplicas": 1, "maxReplicas": 4}, r"maxReplicas -> max_replicas; minReplicas -> min"),
        ({"targetSaturation": "0.8"}, r"targetSaturation -> signal \+ target"),
        ({"cooldownPeriod": 600}, r"cooldownPeriod -> idle_scale_to_min_s"),
    ],
)
def test_chart_0_1_keys_fail_naming_the_new_ones(block: dict[str, Any], message: str) -> None:
    for values in (
        _values(block),
        {"engines": {"defaults": {"autoscaling": block}}},
    ):
        with pytest.raises(helm.HelmError, match=message):
            render(values)


# Refused by both executors, with the chart naming the pool and the key.
BAD_POLICIES = [
    ({"min_replicas": 3, "max_replicas": 2}, r"min_replicas \(3\) must not exceed max_replicas"),
    ({"min_replicas": 2, "max_replicas": 2, "warm_standby": 1}, r"warm_standby \(1\) does not fit"),
    ({"max_replicas": 0, "min_replicas": 0}, r"max_replicas must be at least 1"),
    ({"signal": "cpu"}, r"signal must be one of queue_depth, in_flight_per_replica"),
    ({"target": 0}, r"target must be positive"),
    ({"evaluation_interval_s": 0}, r"evaluation_interval_s must be positive"),
    ({"prescale_fraction": 1.5}, r"prescale_fraction must be at most 1"),
    ({"cooldown_s": -1}, r"cooldown_s must not be negative"),
    ({"min_replicas": 1.5}, r"min_replicas must be a whole number"),
    ({"target": "fast"}, r"target must be a number"),
    ({"replicas": 3}, r"unknown key\(s\) replicas"),
]


@pytest.mark.parametrize(("block", "message"), BAD_POLICIES)
def test_a_policy_tidegate_refuses_the_chart_refuses(block: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError):
        AutoscalingPolicy.model_validate({**AutoscalingPolicy().model_dump(), **block})
    # Refused whether the pool scales or not, as tidegate validates the block either way.
    with pytest.raises(helm.HelmError, match=rf'engines pool "chat": autoscaling.*{message}'):
        render(_values(block))


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"scale_down_stabilization_s": 3601}, r"stabilizationWindowSeconds allows at most 3600"),
        ({"cooldown_s": 1801}, r"periodSeconds allows at most 1800"),
    ],
)
def test_policies_the_hpa_cannot_express_are_refused(block: dict[str, Any], message: str) -> None:
    AutoscalingPolicy.model_validate(block)  # fine on a laptop, not expressible on Kubernetes
    with pytest.raises(helm.HelmError, match=message):
        render(_values({"enabled": True, **block}))


def _set(node: Any, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value


_DELETE = object()
_BEHAVIOR = "spec.advanced.horizontalPodAutoscalerConfig.behavior"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("spec.pollingInterval", "1"),  # a string where the CRD types int32
        ("spec.pollingInterval", 0),  # minimum 1
        ("spec.minReplicaCount", 5),  # the CRD's CEL rule: min <= max
        (f"{_BEHAVIOR}.scaleDown.policies.0.periodSeconds", 2**31),  # int32
        ("spec.triggers.0.metadata.threshold", 1.5),  # trigger metadata is strings only
        ("spec.triggers.0.metricTyp", "Value"),  # unknown field: strict field validation
        ("spec.triggers.0.metadata", _DELETE),  # required
        ("spec.scaleTargetRef.name", ""),  # minLength 1
        ("metadata.annotations.x", 1),  # ObjectMeta (the CRD leaves it to the API server)
    ],
)
def test_keda_s_crd_schema_rejects_a_broken_scaled_object(path: str, value: Any) -> None:
    scaled = _scaled_object(render(_values({"enabled": True})))
    validate(scaled)
    broken = copy.deepcopy(scaled)
    _set(broken, path, value)
    with pytest.raises(jsonschema.ValidationError):  # kubernetes-validate's subclasses it
        validate(broken)


def test_the_vendored_schema_is_keda_s_crd() -> None:
    schema = json.loads(
        (Path(__file__).with_name("schemas") / "scaledobject-keda-v1alpha1.json").read_text()
    )
    assert "kedacore/keda v2.20.2" in schema["$comment"]
    assert schema["description"] == "ScaledObject is a specification for a ScaledObject resource"
    spec = schema["properties"]["spec"]
    assert spec["required"] == ["scaleTargetRef", "triggers"]
    assert {"fallback", "idleReplicaCount", "initialCooldownPeriod"} <= set(spec["properties"])
