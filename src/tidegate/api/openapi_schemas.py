"""The component schemas of the gateway's OpenAPI document.

Request bodies validated by pydantic models (``protocol/admin``, the settings documents in
``gateway/policy``) are derived from those models, so the document
follows the code. The bodies checked by hand (the completion bodies in ``protocol/requests``,
batches, traffic, rollouts) and the JSON objects the handlers build are written here, next to
one another, as JSON Schema (OpenAPI 3.1 is JSON Schema 2020-12).
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from tidegate.protocol.admin import KeyCreate, TenantCreate, TenantUpdate
from tidegate.protocol.endpoints import PUBLIC_PATHS
from tidegate.tenancy.policy import TIERS, KeySettings, TenantSettings

__all__ = ["component_schemas", "ref"]

Schema = dict[str, Any]
REF_PREFIX = "#/components/schemas/"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
"""The seed's range, as protocol.requests checks it."""


def ref(name: str) -> Schema:
    return {"$ref": REF_PREFIX + name}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _object(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    """An object with these properties; more may appear (the shapes grow over time)."""
    return {
        "type": "object",
        "properties": {**required, **(optional or {})},
        "required": list(required),
    }


def _closed(fields: dict[str, Schema], required: tuple[str, ...] = ()) -> Schema:
    """A request body whose unknown fields the gateway rejects."""
    return {
        "type": "object",
        "properties": fields,
        "required": list(required),
        "additionalProperties": False,
    }


def _list_of(
    item: str, *, ids: bool = True, has_more: bool = True, id_type: str = "string"
) -> Schema:
    fields: dict[str, Schema] = {
        "object": {"const": "list"},
        "data": {"type": "array", "items": ref(item)},
    }
    if ids:
        id_schema = _nullable({"type": id_type})
        fields.update(first_id=id_schema, last_id=id_schema)
    if has_more:
        fields["has_more"] = {"type": "boolean"}
    return _object(fields)


_STRING: Schema = {"type": "string"}
_INT: Schema = {"type": "integer"}
_NUMBER: Schema = {"type": "number"}
_TIME: Schema = _nullable(_INT)
_ANY_OBJECT: Schema = {"type": "object"}

_ERROR: Schema = _object(
    {
        "error": _object(
            {
                "message": _STRING,
                "type": _STRING,
                "param": _nullable(_STRING),
                "code": _nullable({"type": ["string", "integer"]}),
            }
        )
    }
)

_TENANT = _object(
    {
        "id": _STRING,
        "object": {"const": "tenant"},
        "name": _STRING,
        "tier": _STRING,
        "settings": ref("TenantSettings"),
        "created_at": _TIME,
        "updated_at": _TIME,
    }
)
_API_KEY = _object(
    {
        "id": _STRING,
        "object": {"const": "api_key"},
        "name": _STRING,
        "prefix": _STRING,
        "role": {"enum": ["admin", "member"]},
        "tenant_id": _STRING,
        "status": _STRING,
        "settings": ref("KeySettings"),
        "created_at": _TIME,
        "expires_at": _TIME,
        "revoked_at": _TIME,
        "last_used_at": _TIME,
    },
    {"key": {"type": "string", "description": "The plaintext key; only in the create answer."}},
)
_AUDIT_EVENT = _object(
    {
        "id": _INT,
        "object": {"const": "audit_event"},
        "at": _TIME,
        "actor": _object({"name": _nullable(_STRING), "key_id": _nullable(_STRING)}),
        "tenant_id": _nullable(_STRING),
        "action": _STRING,
        "target": _object({"type": _STRING, "id": _nullable(_STRING)}),
        "details": _nullable(_ANY_OBJECT),
    }
)
_DELETED_TENANT = _object(
    {"id": _STRING, "object": {"const": "tenant.deleted"}, "deleted": {"const": True}}
)
_MODEL = _object(
    {"id": _STRING, "object": {"const": "model"}, "created": _INT, "owned_by": _STRING}
)
_USAGE = _object({"prompt_tokens": _INT, "completion_tokens": _INT, "total_tokens": _INT})


def _completion(object_name: str) -> Schema:
    """A completion answer or a streamed chunk of one: chat and text ones, answers and chunks,
    differ only in their object."""
    return _object(
        {
            "id": _STRING,
            "object": {"const": object_name},
            "created": _INT,
            "model": _STRING,
            "choices": {"type": "array", "items": _ANY_OBJECT},
        },
        {"usage": _nullable(_USAGE)},
    )


_CHAT_COMPLETION = _completion("chat.completion")
_COMPLETION = _completion("text_completion")
_FILE = _object(
    {
        "id": _STRING,
        "object": {"const": "file"},
        "bytes": _INT,
        "created_at": _INT,
        "filename": _STRING,
        "purpose": {"enum": ["batch", "batch_output"]},
        "status": {"const": "processed"},
        "status_details": {"type": "null"},
    }
)
_FILE_DELETED = _object({"id": _STRING, "object": {"const": "file"}, "deleted": {"const": True}})
_TOKEN_COUNT: Schema = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
_TOKEN_ID: Schema = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
_SAMPLING: dict[str, Schema] = {
    "model": {"type": "string", "minLength": 1},
    "stream": {"type": "boolean"},
    "stream_options": _nullable(
        {
            "type": "object",
            "properties": {
                "include_usage": _nullable({"type": "boolean"}),
                "continuous_usage_stats": _nullable({"type": "boolean"}),
            },
        }
    ),
    "max_tokens": _nullable(_TOKEN_COUNT),
    "n": _nullable(_TOKEN_COUNT),
    "temperature": _nullable({"type": "number", "minimum": 0, "maximum": 2}),
    "top_p": _nullable({"type": "number", "exclusiveMinimum": 0, "maximum": 1}),
    "presence_penalty": _nullable({"type": "number", "minimum": -2, "maximum": 2}),
    "frequency_penalty": _nullable({"type": "number", "minimum": -2, "maximum": 2}),
    "seed": _nullable({"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX}),
    "stop": _nullable({"anyOf": [_STRING, {"type": "array", "items": _STRING}]}),
    "user": _nullable(_STRING),
    "tools": _nullable({"type": "array", "items": _ANY_OBJECT}),
    "tool_choice": _nullable({"anyOf": [_STRING, _ANY_OBJECT]}),
}
"""The fields every completion body shares. Others pass through to the engine, except the
vLLM extensions the operator has not allowed."""
_CONTENT_PART: Schema = {"type": "object", "properties": {"type": _STRING}, "required": ["type"]}
_MESSAGE: Schema = {
    "type": "object",
    "properties": {
        "role": {"enum": ["system", "developer", "user", "assistant", "tool", "function"]},
        "content": _nullable({"anyOf": [_STRING, {"type": "array", "items": _CONTENT_PART}]}),
        "name": _nullable(_STRING),
        "tool_call_id": _nullable(_STRING),
        "tool_calls": _nullable({"type": "array"}),
    },
    "required": ["role"],
}
_CHAT_REQUEST: Schema = {
    "type": "object",
    "properties": {
        **_SAMPLING,
        "messages": {"type": "array", "items": _MESSAGE, "minItems": 1},
        "max_completion_tokens": _nullable(_TOKEN_COUNT),
        "logprobs": _nullable({"type": "boolean"}),
        "top_logprobs": _nullable({"type": "integer", "minimum": 0, "maximum": 2**31 - 1}),
    },
    "required": ["model", "messages"],
}
_COMPLETION_REQUEST: Schema = {
    "type": "object",
    "properties": {
        **_SAMPLING,
        "prompt": {
            "anyOf": [
                _STRING,
                {"type": "array", "items": _STRING, "minItems": 1},
                {"type": "array", "items": _TOKEN_ID, "minItems": 1},
                {
                    "type": "array",
                    "items": {"type": "array", "items": _TOKEN_ID, "minItems": 1},
                    "minItems": 1,
                },
            ]
        },
    },
    "required": ["model", "prompt"],
}


def _stream_event(chunk: str) -> Schema:
    """One server-sent event of a streamed completion: a chunk, an in-band error once the
    stream has started, or the final [DONE]."""
    return {
        "type": "object",
        "properties": {
            "event": _STRING,
            "data": {
                "anyOf": [
                    {"const": "[DONE]"},
                    {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": {"anyOf": [ref(chunk), ref("Error")]},
                    },
                ]
            },
        },
        "required": ["data"],
    }


_BATCH_CREATE = _closed(
    {
        "input_file_id": {"type": "string", "minLength": 1},
        "endpoint": {"enum": list(PUBLIC_PATHS.values())},
        "completion_window": {
            "type": "string",
            "pattern": "^[1-9][0-9]{0,6}[hms]$",
            "description": "A duration such as 24h, 30m or 90s.",
        },
        "metadata": _nullable(
            {
                "type": "object",
                "maxProperties": 16,
                "additionalProperties": {"type": "string", "maxLength": 512},
            }
        ),
    },
    ("input_file_id", "endpoint", "completion_window"),
)
_BATCH = _object(
    {
        "id": _STRING,
        "object": {"const": "batch"},
        "endpoint": _STRING,
        "errors": _nullable(_object({"object": {"const": "list"}, "data": {"type": "array"}})),
        "input_file_id": _STRING,
        "completion_window": _STRING,
        "status": {
            "enum": [
                "validating",
                "failed",
                "in_progress",
                "finalizing",
                "completed",
                "expired",
                "cancelling",
                "cancelled",
            ]
        },
        "output_file_id": _nullable(_STRING),
        "error_file_id": _nullable(_STRING),
        "created_at": _TIME,
        "in_progress_at": _TIME,
        "expires_at": _TIME,
        "finalizing_at": _TIME,
        "completed_at": _TIME,
        "failed_at": _TIME,
        "expired_at": _TIME,
        "cancelling_at": _TIME,
        "cancelled_at": _TIME,
        "request_counts": _object({"total": _INT, "completed": _INT, "failed": _INT}),
        "metadata": _nullable({"type": "object", "additionalProperties": _STRING}),
    }
)
_WEIGHTS: Schema = {
    "anyOf": [
        {"type": "object", "additionalProperties": _NUMBER},
        {
            "type": "array",
            "items": {"type": "array", "prefixItems": [_STRING, _NUMBER], "minItems": 2},
        },
    ]
}
_TRAFFIC_UPDATE = _closed(
    {
        "weights": _nullable(_WEIGHTS),
        "stable_pool": _nullable(_STRING),
        "sticky_by": _nullable({"enum": ["session", "tenant"]}),
        "shadow": _nullable(
            _closed({"pool": _STRING, "sample": {"type": "number"}}, ("pool", "sample"))
        ),
    }
)
_ROLLOUT_REF = _object(
    {
        "id": _STRING,
        "state": {"enum": ["running", "paused"]},
        "step_index": _INT,
        "stable_pool": _STRING,
        "candidate_pool": _STRING,
    }
)
_TRAFFIC = _object(
    {
        "object": {"const": "model.traffic"},
        "model": _STRING,
        "stable_pool": _nullable(_STRING),
        "weights": {"type": "array", "items": {"type": "array"}},
        "shares": {"type": "object", "additionalProperties": _NUMBER},
        "sticky_by": _nullable(_STRING),
        "shadow": _nullable(_object({"pool": _STRING, "sample": _NUMBER})),
        "revision": _INT,
        "updated_at": _TIME,
        "updated_by": _nullable(_STRING),
        "rollout": _nullable(_ROLLOUT_REF),
    },
    {"rolled_back": {"type": "array", "items": _STRING, "description": "Rollouts ended."}},
)
_VERSION_CREATE = _closed(
    {"pool": _STRING, "source": _STRING, "revision": _STRING, "profile_hash": _STRING},
    ("pool", "source"),
)
_VERSION = _object(
    {
        "id": _STRING,
        "object": {"const": "model.version"},
        "model": _STRING,
        "pool": _STRING,
        "source": _STRING,
        "revision": _STRING,
        "profile_hash": _STRING,
        "created_at": _TIME,
        "created_by": _nullable(_STRING),
    }
)
_ADAPTER_CREATE = _closed(
    {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"},
        "version": {"type": "string", "pattern": "^$|^[A-Za-z0-9][A-Za-z0-9._-]{0,30}$"},
        "pool": _STRING,
        "path": {"type": "string", "pattern": "^/", "maxLength": 1000},
        "hub_id": _STRING,
    },
    ("name",),
)
_ADAPTER_FIELDS: dict[str, Schema] = {
    "object": {"const": "adapter"},
    "id": _STRING,
    "name": _STRING,
    "version": _STRING,
    "pool": _STRING,
    "source": _STRING,
    "configured": {"type": "boolean"},
}
_ADAPTER = _object(
    {
        **_ADAPTER_FIELDS,
        "replicas": {
            "type": "array",
            "items": _object({"id": _STRING, "loaded": {"type": "boolean"}, "detail": _STRING}),
        },
    }
)
_ADAPTER_DELETED = _object({**_ADAPTER_FIELDS, "deleted": {"const": True}})
_ROLLOUT_CREATE = _closed(
    {
        "model": {"type": "string", "minLength": 1},
        "candidate_pool": {"type": "string", "minLength": 1},
        "steps": {"type": "array", "items": _NUMBER, "examples": [[5, 25, 100]]},
        "hold_s": _NUMBER,
        "gates": _nullable(_ANY_OBJECT),
    },
    ("model", "candidate_pool", "steps", "hold_s"),
)
_ROLLOUT = _object(
    {
        "id": _STRING,
        "object": {"const": "rollout"},
        "model": _STRING,
        "stable_pool": _STRING,
        "candidate_pool": _STRING,
        "steps": {"type": "array", "items": _NUMBER},
        "hold_s": _NUMBER,
        "gates": _ANY_OBJECT,
        "state": _STRING,
        "step_index": _INT,
        "share": _NUMBER,
        "step_started_at": _TIME,
        "reason": _nullable(_STRING),
        "history": {"type": "array"},
        "created_at": _TIME,
        "created_by": _nullable(_STRING),
        "updated_at": _TIME,
        "finished_at": _TIME,
        "current_step": _nullable(
            _object(
                {
                    "verdict": _STRING,
                    "failed_gate": _nullable(_STRING),
                    "reason": _nullable(_STRING),
                    "figures": _ANY_OBJECT,
                }
            )
        ),
    }
)
_SHADOW_SUMMARY = _object(
    {
        "object": {"const": "shadow.summary"},
        "model": _STRING,
        "since": _TIME,
        "data": {"type": "array", "items": _object({"object": {"const": "shadow.pair"}})},
    }
)
_SHADOW_COMPARISON = _object(
    {
        "id": _INT,
        "object": {"const": "shadow.comparison"},
        "request_id": _STRING,
        "model": _STRING,
        "created_at": _TIME,
        "expires_at": _TIME,
    }
)
_USAGE_ROLLUP = _object(
    {
        "object": {"const": "usage.rollup"},
        "group_by": {"enum": ["day", "model"]},
        "data": {"type": "array", "items": _object({"tenant_id": _STRING})},
    }
)
_USAGE_RECORDS = _object(
    {
        "object": {"const": "list"},
        "data": {"type": "array", "items": _object({"request_id": _STRING})},
        "has_more": {"type": "boolean"},
        "next_cursor": _nullable(_STRING),
    }
)


def _derived() -> dict[str, Schema]:
    """The schemas pydantic derives from the protocol models."""
    models = (
        TenantCreate,
        TenantUpdate,
        KeyCreate,
        TenantSettings,
        KeySettings,
    )
    _, top = models_json_schema(
        [(model, "validation") for model in models], ref_template=REF_PREFIX + "{model}"
    )
    schemas: dict[str, Schema] = dict(top.get("$defs", {}))
    # The settings are plain objects in the admin bodies (the gateway validates them against
    # the policy schema itself, after merging); the document names that schema.
    schemas["TenantCreate"]["properties"]["settings"] = ref("TenantSettings")
    schemas["KeyCreate"]["properties"]["settings"] = _nullable(ref("KeySettings"))
    # A tier is a plain string in the body; the tenant service accepts only these.
    schemas["TenantCreate"]["properties"]["tier"] = {"enum": list(TIERS), "default": "interactive"}
    schemas["TenantUpdate"]["properties"]["tier"] = _nullable({"enum": list(TIERS)})
    return schemas


def component_schemas() -> dict[str, Schema]:
    return {
        **_derived(),
        "Error": _ERROR,
        "Tenant": _TENANT,
        "TenantList": _list_of("Tenant"),
        "TenantDeleted": _DELETED_TENANT,
        "ApiKey": _API_KEY,
        "ApiKeyList": _list_of("ApiKey"),
        "AuditEvent": _AUDIT_EVENT,
        "AuditEventList": _list_of("AuditEvent", id_type="integer"),
        "Model": _MODEL,
        "ModelList": _list_of("Model", ids=False, has_more=False),
        "File": _FILE,
        "FileList": _list_of("File"),
        "FileDeleted": _FILE_DELETED,
        "ChatCompletionRequest": _CHAT_REQUEST,
        "CompletionRequest": _COMPLETION_REQUEST,
        "ChatCompletion": _CHAT_COMPLETION,
        "Completion": _COMPLETION,
        "ChatCompletionChunk": _completion("chat.completion.chunk"),
        "CompletionChunk": _completion("text_completion"),
        "ChatCompletionEvent": _stream_event("ChatCompletionChunk"),
        "CompletionEvent": _stream_event("CompletionChunk"),
        "BatchCreateRequest": _BATCH_CREATE,
        "Batch": _BATCH,
        "BatchList": _list_of("Batch"),
        "TrafficUpdate": _TRAFFIC_UPDATE,
        "Traffic": _TRAFFIC,
        "VersionCreate": _VERSION_CREATE,
        "Version": _VERSION,
        "VersionList": _list_of("Version", ids=False, has_more=False),
        "AdapterCreate": _ADAPTER_CREATE,
        "Adapter": _ADAPTER,
        "AdapterList": _list_of("Adapter", ids=False, has_more=False),
        "AdapterDeleted": _ADAPTER_DELETED,
        "RolloutCreate": _ROLLOUT_CREATE,
        "Rollout": _ROLLOUT,
        "RolloutList": _list_of("Rollout", ids=False, has_more=False),
        "ShadowSummary": _SHADOW_SUMMARY,
        "ShadowComparison": _SHADOW_COMPARISON,
        "ShadowComparisonList": _list_of("ShadowComparison", id_type="integer"),
        "UsageRollup": _USAGE_ROLLUP,
        "UsageRecordList": _USAGE_RECORDS,
    }
