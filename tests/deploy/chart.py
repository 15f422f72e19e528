"""Render the Helm chart through Helm's own library (helm-python-sdk, no binary) and validate
every manifest: built-in kinds against the Kubernetes OpenAPI schemas (kubernetes-validate,
offline), custom resources against the structural subsets in schemas/."""

from __future__ import annotations

import json
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


@cache
def _crd_schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / f"{name}.json").read_text())
    return schema


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
    jsonschema.validate(manifest, _crd_schema(_crd_name(manifest)))
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
