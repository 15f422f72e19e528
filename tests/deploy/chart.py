"""Render the Helm chart through Helm's own library (helm-python-sdk, no binary) and validate
every manifest: built-in kinds against the Kubernetes OpenAPI schemas (kubernetes-validate,
offline), custom resources against schemas/: the ScaledObject against KEDA's own CRD schema
(vendored verbatim, its source in the file's $comment; refresh it by copying
spec.versions[v1alpha1].schema.openAPIV3Schema of a newer keda.sh_scaledobjects.yaml), the
others against structural subsets of theirs."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "tidegate"
SCHEMAS = Path(__file__).with_name("schemas")
KUBE_VERSION = "1.30"
RELEASE, NAMESPACE = "tg", "llm"

Manifest = dict[str, Any]


def render(values: dict[str, Any] | None = None) -> list[Manifest]:
    rendered = helm.Chart.load(CHART).render(
        values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True
    )
    manifests: list[Manifest] = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".yaml"):
            manifests.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return manifests


def lint_errors(values: dict[str, Any] | None = None) -> list[str]:
    report = helm.lint(CHART, values or {}, strict=True, kube_version=f"v{KUBE_VERSION}.0")
    problems = [m["error"] for m in report["messages"] if m["severity"] >= 2]
    return problems + list(report["errors"])


# CRD schemas vendored as their projects publish them (OpenAPI v3), not hand-written subsets.
_OPENAPI_CRDS = {"scaledobject-keda-v1alpha1"}
_INT32 = (-(2**31), 2**31 - 1)
# The CEL rules (x-kubernetes-validations) of the vendored CRDs, in Python. A rule not listed
# here fails the test: a refreshed CRD with a new rule must be translated, not skipped.
_CEL_RULES: dict[str, Callable[[dict[str, Any]], bool]] = {
    "!has(self.minReplicaCount) || self.minReplicaCount <= (has(self.maxReplicaCount)"
    " ? self.maxReplicaCount : 100)": lambda spec: (
        "minReplicaCount" not in spec or spec["minReplicaCount"] <= spec.get("maxReplicaCount", 100)
    ),
}
Rules = list[tuple[tuple[str, ...], str, str]]


def _as_api_server(node: Any, path: tuple[str, ...], rules: Rules) -> Any:
    """An OpenAPI CRD schema as the API server applies it with strict field validation
    (kubectl and Helm's default): unknown fields are errors rather than pruned, int32 is
    bounded; its CEL rules are collected with the path of the object they apply to."""
    if isinstance(node, list):
        return [_as_api_server(item, path, rules) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "x-kubernetes-validations":
            rules.extend((path, rule["rule"], rule["message"]) for rule in value)
        elif key == "properties":
            out[key] = {k: _as_api_server(v, (*path, k), rules) for k, v in value.items()}
        else:
            out[key] = _as_api_server(value, path, rules)
    if out.get("type") == "object" and "properties" in out:
        out.setdefault("additionalProperties", False)
    if out.get("format") == "int32":
        out["minimum"] = max(out.get("minimum", _INT32[0]), _INT32[0])
        out["maximum"] = min(out.get("maximum", _INT32[1]), _INT32[1])
    return out


@cache
def _crd_schema(name: str) -> tuple[dict[str, Any], Rules]:
    schema: dict[str, Any] = json.loads((SCHEMAS / f"{name}.json").read_text())
    rules: Rules = []
    if name in _OPENAPI_CRDS:
        schema = _as_api_server(schema, (), rules)
    return schema, rules


def _check_cel(manifest: Manifest, rules: Rules) -> None:
    for path, rule, message in rules:
        node: Any = manifest
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            continue
        check = _CEL_RULES.get(rule)
        if check is None:
            raise AssertionError(f"CEL rule at {'.'.join(path)} not translated: {rule}")
        if not check(node):
            raise jsonschema.ValidationError(f"{'.'.join(path)}: {message}")


def _crd_name(manifest: Manifest) -> str:
    group = manifest["apiVersion"].split("/")[0].split(".")[0]
    return f"{manifest['kind'].lower()}-{group}-{manifest['apiVersion'].split('/')[-1]}"


def _validate_pod_spec(spec: dict[str, Any]) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "template"}, "spec": spec}
    kubernetes_validate.validate(pod, KUBE_VERSION, strict=True)


def validate(manifest: Manifest) -> None:
    """Raises when the manifest does not match its schema (strict: unknown fields fail too)."""
    try:
        kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)
        return
    except kubernetes_validate.SchemaNotFoundError:
        pass
    name = _crd_name(manifest)
    schema, rules = _crd_schema(name)
    jsonschema.validate(manifest, schema)
    _check_cel(manifest, rules)
    if name in _OPENAPI_CRDS:  # the CRD leaves metadata to the API server's ObjectMeta
        meta = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": manifest["metadata"]}
        kubernetes_validate.validate(meta, KUBE_VERSION, strict=True)
    if manifest["kind"] == "LeaderWorkerSet":
        template = manifest["spec"]["leaderWorkerTemplate"]
        for key in ("leaderTemplate", "workerTemplate"):
            _validate_pod_spec(template[key]["spec"])


def by_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def named(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    matches = [m for m in by_kind(manifests, kind) if m["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]
