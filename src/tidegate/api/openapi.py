"""The gateway's own OpenAPI 3.1 document, served at ``GET /openapi.json``.

One table (``OPERATIONS``) lists every route with who may call it, its parameters, its body,
its answer and the error statuses it can give; ``openapi_document`` turns it into the document.
A test walks the app's mounted routes and fails for any route this table does not describe, so
a new route cannot be left out. The schemas are in ``openapi_schemas``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson
from starlette.requests import Request
from starlette.responses import Response

from tidegate.api.openapi_schemas import Schema, component_schemas, ref
from tidegate.protocol.endpoints import PUBLIC_PATHS
from tidegate.scheduling.classes import CLASSES

__all__ = ["OPERATIONS", "Operation", "OpenApiRoute", "openapi_document"]

Access = Literal["public", "key", "admin", "operator"]
"""public: no key; key: any API key; admin: an admin key (a tenant's admin sees its own
tenant); operator: an admin key of the system tenant."""
Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    schema: Schema
    where: Literal["query", "path", "header"] = "query"
    description: str = ""


@dataclass(frozen=True, slots=True)
class Operation:
    method: Method
    path: str
    """As OpenAPI writes it: ``{model}``, not Starlette's ``{model:path}``."""
    summary: str
    tag: str
    access: Access
    response: str | None
    """The component schema of the success answer; None: not JSON (see ``media``)."""
    status: int = 200
    body: str | None = None
    """The component schema of a JSON body."""
    params: tuple[Param, ...] = ()
    errors: tuple[int, ...] = ()
    """Error statuses beyond those of the access level (401, 403) and the body (400, 413)."""
    media: tuple[str, ...] = ("application/json",)
    multipart: bool = False
    description: str = ""


def _limit(maximum: int) -> Param:
    return Param("limit", {"type": "integer", "minimum": 1, "maximum": maximum})


_AFTER = Param("after", {"type": "string"}, description="The last_id of the previous page.")
_AFTER_INT = Param("after", {"type": "integer"}, description="The last_id of the previous page.")
_TENANT_FILTER = Param("tenant_id", {"type": "string"}, description="Only this tenant.")
_SINCE = Param("since", {"type": "string"}, description="A UTC day (2026-01-31) or ISO time.")
_UNTIL = Param("until", {"type": "string"}, description="A UTC day (2026-01-31) or ISO time.")
_MODEL = Param("model", {"type": "string", "minLength": 1}, "path", "A public model name.")
_COMPLETION_HEADERS = (
    Param("x-request-id", {"type": "string"}, "header", "Echoed and logged as a correlation id."),
    Param("x-tidegate-priority", {"enum": list(CLASSES)}, "header", "The class."),
    Param(
        "x-tidegate-deadline-ms",
        {"type": "string", "pattern": "^[0-9]{1,9}$"},
        "header",
        "Give up when no replica took the request within this many milliseconds.",
    ),
    Param("x-tidegate-quality", {"type": "string"}, "header", "A hint routing rules match."),
    Param("x-tidegate-session-id", {"type": "string"}, "header", "A replica affinity key."),
)
_COMPLETION_ERRORS = (403, 404, 429, 502, 503, 504)


def _path_id(name: str) -> Param:
    return Param(name, {"type": "string", "minLength": 1}, "path")


def _admin(method: Method, path: str, summary: str, response: str | None, **more: Any) -> Operation:
    """An admin-key operation of the admin tag; like every admin one it can answer 404."""
    return Operation(method, path, summary, "admin", "admin", response, errors=(404,), **more)


def _rollout_operation(name: str) -> Operation:
    return Operation(
        "POST",
        f"/admin/rollouts/{{rollout_id}}/{name}",
        f"{name.capitalize()} a rollout",
        "rollouts",
        "operator",
        "Rollout",
        params=(_path_id("rollout_id"),),
        errors=(404,),
    )


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST",
        PUBLIC_PATHS["chat"],
        "Create a chat completion (stream: true answers server-sent events)",
        "completions",
        "key",
        "ChatCompletion",
        body="ChatCompletionRequest",
        params=_COMPLETION_HEADERS,
        errors=_COMPLETION_ERRORS,
        media=("application/json", "text/event-stream"),
    ),
    Operation(
        "POST",
        PUBLIC_PATHS["completions"],
        "Create a completion (stream: true answers server-sent events)",
        "completions",
        "key",
        "Completion",
        body="CompletionRequest",
        params=_COMPLETION_HEADERS,
        errors=_COMPLETION_ERRORS,
        media=("application/json", "text/event-stream"),
    ),
    Operation("GET", "/v1/models", "List the models", "models", "key", "ModelList"),
    Operation("GET", "/healthz", "Liveness", "system", "public", None, media=("application/json",)),
    Operation(
        "GET",
        "/readyz",
        "Readiness: the store answers and every model has a ready replica",
        "system",
        "public",
        None,
        errors=(503,),
    ),
    Operation(
        "GET",
        "/metrics",
        "Prometheus metrics",
        "system",
        "operator",
        None,
        media=("text/plain",),
        description=(
            "The bearer token is server.metrics_token or an operator's admin key; the "
            "metrics listener (server.metrics_port) serves the same without one."
        ),
    ),
    Operation("GET", "/openapi.json", "This document", "system", "public", None, errors=()),
    Operation(
        "POST",
        "/v1/files",
        "Upload a batch input file (multipart: file, purpose=batch)",
        "files",
        "key",
        "File",
        multipart=True,
        errors=(404,),
    ),
    Operation(
        "GET",
        "/v1/files",
        "List files",
        "files",
        "key",
        "FileList",
        params=(
            Param("purpose", {"type": "string"}),
            _AFTER,
            _limit(10_000),
            Param("order", {"enum": ["asc", "desc"]}),
        ),
        errors=(404,),
    ),
    Operation(
        "GET",
        "/v1/files/{file_id}",
        "Retrieve a file",
        "files",
        "key",
        "File",
        params=(_path_id("file_id"),),
        errors=(404,),
    ),
    Operation(
        "DELETE",
        "/v1/files/{file_id}",
        "Delete a file",
        "files",
        "key",
        "FileDeleted",
        params=(_path_id("file_id"),),
        errors=(404,),
    ),
    Operation(
        "GET",
        "/v1/files/{file_id}/content",
        "A file's content",
        "files",
        "key",
        None,
        params=(_path_id("file_id"),),
        errors=(404,),
        media=("application/octet-stream",),
    ),
    Operation(
        "POST",
        "/v1/batches",
        "Create a batch",
        "batches",
        "key",
        "Batch",
        body="BatchCreateRequest",
        errors=(404,),
    ),
    Operation(
        "GET",
        "/v1/batches",
        "List batches, newest first",
        "batches",
        "key",
        "BatchList",
        params=(_AFTER, _limit(100)),
        errors=(404,),
    ),
    Operation(
        "GET",
        "/v1/batches/{batch_id}",
        "Retrieve a batch",
        "batches",
        "key",
        "Batch",
        params=(_path_id("batch_id"),),
        errors=(404,),
    ),
    Operation(
        "POST",
        "/v1/batches/{batch_id}/cancel",
        "Cancel a batch",
        "batches",
        "key",
        "Batch",
        params=(_path_id("batch_id"),),
        errors=(404,),
    ),
    Operation(
        "POST",
        "/admin/tenants",
        "Create a tenant",
        "admin",
        "operator",
        "Tenant",
        status=201,
        body="TenantCreate",
    ),
    Operation(
        "GET",
        "/admin/tenants",
        "List tenants (a tenant's admin: its own)",
        "admin",
        "admin",
        "TenantList",
        params=(_limit(100), _AFTER),
    ),
    _admin(
        "GET",
        "/admin/tenants/{tenant_id}",
        "Retrieve a tenant",
        "Tenant",
        params=(_path_id("tenant_id"),),
    ),
    Operation(
        "PATCH",
        "/admin/tenants/{tenant_id}",
        "Change a tenant's name, tier or settings (settings: a JSON merge patch)",
        "admin",
        "operator",
        "Tenant",
        body="TenantUpdate",
        params=(_path_id("tenant_id"),),
        errors=(404,),
    ),
    Operation(
        "DELETE",
        "/admin/tenants/{tenant_id}",
        "Delete a tenant (refused while it has active keys)",
        "admin",
        "operator",
        "TenantDeleted",
        params=(_path_id("tenant_id"),),
        errors=(404,),
    ),
    _admin(
        "POST",
        "/admin/keys",
        "Create an API key; the answer holds the key, once",
        "ApiKey",
        status=201,
        body="KeyCreate",
    ),
    _admin(
        "GET",
        "/admin/keys",
        "List API keys",
        "ApiKeyList",
        params=(_TENANT_FILTER, _limit(100), _AFTER),
    ),
    _admin(
        "GET",
        "/admin/keys/{key_id}",
        "Retrieve an API key",
        "ApiKey",
        params=(_path_id("key_id"),),
    ),
    _admin(
        "DELETE",
        "/admin/keys/{key_id}",
        "Revoke an API key",
        "ApiKey",
        params=(_path_id("key_id"),),
    ),
    _admin(
        "GET",
        "/admin/audit",
        "The audit log, newest first",
        "AuditEventList",
        params=(_TENANT_FILTER, _limit(100), _AFTER_INT),
    ),
    Operation(
        "GET",
        "/admin/usage",
        "Usage rolled up per tenant and day or model",
        "usage",
        "admin",
        "UsageRollup",
        params=(_TENANT_FILTER, Param("group_by", {"enum": ["day", "model"]}), _SINCE, _UNTIL),
        errors=(404,),
    ),
    Operation(
        "GET",
        "/admin/usage/records",
        "Raw usage records, oldest first",
        "usage",
        "admin",
        "UsageRecordList",
        params=(
            _TENANT_FILTER,
            _SINCE,
            _UNTIL,
            _limit(1000),
            Param("after", {"type": "string"}, description="The next_cursor of the last page."),
        ),
        errors=(404,),
    ),
    Operation(
        "GET",
        "/admin/models/{model}/traffic",
        "A model's traffic split, stable pool, shadow and active rollout",
        "traffic",
        "operator",
        "Traffic",
        params=(_MODEL,),
        errors=(404,),
    ),
    Operation(
        "PUT",
        "/admin/models/{model}/traffic",
        "Change a model's traffic split or shadow",
        "traffic",
        "operator",
        "Traffic",
        body="TrafficUpdate",
        params=(_MODEL,),
        errors=(404,),
    ),
    Operation(
        "POST",
        "/admin/models/{model}/rollback",
        "Send all traffic to the stable pool; ends an active rollout",
        "traffic",
        "operator",
        "Traffic",
        params=(_MODEL,),
        errors=(404,),
    ),
    Operation(
        "GET",
        "/admin/models/{model}/versions",
        "A model's versions, newest first",
        "traffic",
        "operator",
        "VersionList",
        params=(_MODEL,),
        errors=(404,),
    ),
    Operation(
        "POST",
        "/admin/models/{model}/versions",
        "Register a model version",
        "traffic",
        "operator",
        "Version",
        status=201,
        body="VersionCreate",
        params=(_MODEL,),
        errors=(404,),
    ),
    Operation(
        "GET",
        "/admin/adapters",
        "LoRA adapter versions (configured and runtime), with each replica's load state",
        "adapters",
        "operator",
        "AdapterList",
    ),
    Operation(
        "POST",
        "/admin/adapters",
        "Add a LoRA adapter version and load it on its base pool's replicas",
        "adapters",
        "operator",
        "Adapter",
        status=201,
        body="AdapterCreate",
    ),
    Operation(
        "DELETE",
        "/admin/adapters/{name}",
        "Remove a runtime LoRA adapter version (NAME or NAME@VERSION) and unload it",
        "adapters",
        "operator",
        "AdapterDeleted",
        params=(Param("name", {"type": "string", "minLength": 1}, "path", "NAME[@VERSION]."),),
        errors=(404,),
    ),
    Operation(
        "GET",
        "/admin/models/{model}/shadow",
        "Shadow comparison summary per (primary pool, shadow pool)",
        "shadow",
        "operator",
        "ShadowSummary",
        params=(_MODEL, _SINCE),
        errors=(404,),
    ),
    Operation(
        "GET",
        "/admin/models/{model}/shadow/comparisons",
        "Shadow comparisons, newest first",
        "shadow",
        "operator",
        "ShadowComparisonList",
        params=(_MODEL, _limit(100), _AFTER_INT),
        errors=(404,),
    ),
    Operation(
        "POST",
        "/admin/rollouts",
        "Start a staged rollout",
        "rollouts",
        "operator",
        "Rollout",
        status=201,
        body="RolloutCreate",
        errors=(404,),
    ),
    Operation(
        "GET",
        "/admin/rollouts",
        "Rollouts, newest first",
        "rollouts",
        "operator",
        "RolloutList",
        params=(
            Param("model", {"type": "string"}),
            Param("state", {"type": "string"}),
            _limit(100),
        ),
        errors=(404,),
    ),
    Operation(
        "GET",
        "/admin/rollouts/{rollout_id}",
        "A rollout with the current step's gate figures",
        "rollouts",
        "operator",
        "Rollout",
        params=(_path_id("rollout_id"),),
        errors=(404,),
    ),
    Operation(
        "GET",
        "/admin/rollouts/{rollout_id}/report",
        "A rollout's report",
        "rollouts",
        "operator",
        None,
        params=(_path_id("rollout_id"), Param("format", {"enum": ["md", "html"]})),
        errors=(404,),
        media=("text/markdown", "text/html"),
    ),
    *(_rollout_operation(name) for name in ("pause", "resume", "abort", "promote")),
)

_DESCRIPTIONS = {
    400: "The request is malformed; the error names the field and how to fix it.",
    401: "No API key, or one that is unknown, revoked or expired.",
    403: "The key may not do this.",
    404: "No such object, or one of another tenant (the two answer alike).",
    413: "The body is larger than the gateway accepts.",
    429: "A rate limit, budget or queue is full; see Retry-After.",
    502: "The upstream failed.",
    503: "No replica is ready, or the gateway is not ready.",
    504: "The upstream timed out.",
}


def _error_statuses(op: Operation) -> list[int]:
    statuses = set(op.errors)
    if op.access != "public":
        statuses.add(401)
    if op.access in ("admin", "operator"):
        statuses.add(403)
    if op.access != "public" or op.body is not None or op.multipart:
        statuses.add(400)  # malformed bodies, queries and path ids
    if op.body is not None or op.multipart:
        statuses.add(413)
    return sorted(statuses)


def _success(op: Operation) -> dict[str, Any]:
    content: dict[str, Any] = {}
    for media in op.media:
        if media == "application/json":
            content[media] = {"schema": ref(op.response) if op.response else {"type": "object"}}
        elif media == "text/event-stream":
            # OpenAPI 3.1 reads the schema of an event stream as that of each event.
            content[media] = {"schema": ref(f"{op.response}Event")}
        else:
            content[media] = {"schema": {"type": "string"}}
    return {"description": op.summary, "content": content}


def _operation(op: Operation) -> dict[str, Any]:
    error_content = {"application/json": {"schema": ref("Error")}}
    responses: dict[str, Any] = {str(op.status): _success(op)}
    for status in _error_statuses(op):
        responses[str(status)] = {
            "description": _DESCRIPTIONS.get(status, "An error."),
            "content": error_content,
        }
    document: dict[str, Any] = {
        "operationId": f"{op.method.lower()} {op.path}",
        "summary": op.summary,
        "tags": [op.tag],
        "responses": responses,
        "security": [] if op.access == "public" else [{"bearer": []}],
    }
    if op.description:
        document["description"] = op.description
    elif op.access in ("admin", "operator"):
        document["description"] = (
            "For admin keys of the system tenant (the operator) only."
            if op.access == "operator"
            else "For admin keys; a tenant's admin key sees only its own tenant."
        )
    if op.params:
        document["parameters"] = [
            {
                "name": param.name,
                "in": param.where,
                "required": param.where == "path",
                "schema": param.schema,
                **({"description": param.description} if param.description else {}),
            }
            for param in op.params
        ]
    if op.body is not None:
        document["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref(op.body)}},
        }
    elif op.multipart:
        upload = {
            "type": "object",
            "properties": {
                "file": {"type": "string", "format": "binary"},
                "purpose": {"enum": ["batch"]},
            },
            "required": ["file", "purpose"],
        }
        document["requestBody"] = {
            "required": True,
            "content": {"multipart/form-data": {"schema": upload}},
        }
    return document


def openapi_document(version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tidegate",
            "version": version,
            "description": (
                "An OpenAI-compatible LLM gateway: the /v1 routes speak the OpenAI API, the "
                "/admin routes manage tenants, keys, usage, traffic and rollouts. Every error "
                "is an OpenAI error object."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": component_schemas(),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A tidegate API key (tg-...).",
                }
            },
        },
    }


class OpenApiRoute:
    """Serves the document, built on the first request (it depends on the code only; building
    it takes tens of milliseconds, which every app start would otherwise pay)."""

    def __init__(self, *, version: str) -> None:
        self._version = version
        self._body: bytes | None = None

    async def serve(self, request: Request) -> Response:
        if self._body is None:
            self._body = orjson.dumps(openapi_document(self._version))
        return Response(self._body, media_type="application/json")
