"""The cheap checks of a request body that need no tokenizer: nesting depth, model access,
sampling caps, ``stop`` and parameters the engines do not support.

Each failure is an ``InvalidRequestError`` (400) that names the parameter and says how to fix
the request; model access is a ``PermissionDeniedError`` (403). Where they normalise the
request they edit it through its ``set``/``drop`` (``Editable``), so the gateway forwards the
client's own fields with exactly those changes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal, Protocol

from tidegate.errors import InvalidRequestError, PermissionDeniedError
from tidegate.tenancy.policy import KeySettings, TenantSettings

__all__ = [
    "Editable",
    "UnsupportedParams",
    "check_json_depth",
    "check_model_access",
    "check_sampling_caps",
    "json_depth_exceeds",
    "normalise_stop",
]

log = logging.getLogger(__name__)


class Editable(Protocol):
    """A request body the checks may normalise (``protocol.requests.CompletionRequest``)."""

    def get(self, name: str, default: Any = None) -> Any: ...
    def __contains__(self, name: str) -> bool: ...
    def set(self, name: str, value: Any) -> None: ...
    def drop(self, name: str) -> None: ...


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether a parsed JSON value nests deeper than ``limit`` (a bare scalar is depth 0, ``{}``
    is 1). Iterative, and it stops at the first container past the limit."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        depth += 1
        if depth > limit:
            return True
        stack.extend((child, depth) for child in children if isinstance(child, (dict, list)))
    return False


def check_json_depth(value: Any, limit: int) -> None:
    """Reject a body nested deeper than ``limit``; safe to call before schema validation."""
    if json_depth_exceeds(value, limit):
        raise InvalidRequestError(
            f"The request body nests JSON objects and arrays more than {limit} levels deep. "
            "Flatten the structure (tool schemas and message content rarely need more).",
            code="json_too_deep",
        )


def _names(models: list[str]) -> str:
    return ", ".join(f"'{m}'" for m in sorted(models)) or "none"


def check_model_access(model: str, tenant: TenantSettings, key: KeySettings) -> None:
    # 403 rather than 404: the model exists (routing answers 404 for unknown ones, listing them),
    # and "ask for access" is the fix the client needs to hear.
    if tenant.allowed_models is not None and model not in tenant.allowed_models:
        raise PermissionDeniedError(
            f"Your tenant may not use the model '{model}'. Models it may use: "
            f"{_names(tenant.allowed_models)}. Use one of those, or ask an administrator to add "
            f"'{model}' to the tenant's allowed_models.",
            param="model",
            code="model_not_allowed",
        )
    if key.allowed_models is not None and model not in key.allowed_models:
        raise PermissionDeniedError(
            f"This API key may not use the model '{model}'. Models it may use: "
            f"{_names(key.allowed_models)}. Use one of those, or ask an administrator for a key "
            f"whose allowed_models include '{model}'.",
            param="model",
            code="model_not_allowed",
        )


class UnsupportedParams:
    """Drops or rejects parameters the engines do not support, as configured; logs each
    (parameter, action) once per process so the log says what the gateway does without a line per
    request."""

    def __init__(self, *, actions: Mapping[str, Literal["drop", "reject"]]) -> None:
        self._actions = dict(actions)
        self._logged: set[str] = set()

    def apply(self, payload: Editable) -> None:
        if not self._actions:
            return
        for name, action in self._actions.items():
            if name not in payload:
                continue
            if name not in self._logged:
                self._logged.add(name)
                log.info(
                    "request parameter '%s' is not supported by the engines: %s (configured in "
                    "validation.unsupported_params; logged once)",
                    name,
                    "dropped" if action == "drop" else "rejected",
                )
            if action == "reject":
                raise InvalidRequestError(
                    f"The parameter '{name}' is not supported by the models served here. Remove "
                    "it from the request.",
                    param=name,
                    code="unsupported_parameter",
                )
            payload.drop(name)


def _int_field(payload: Mapping[str, Any], name: str, *, minimum: int) -> int | None:
    value: object = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidRequestError(
            f"Invalid value for '{name}': expected an integer of at least {minimum} "
            f"(got {value!r}).",
            param=name,
        )
    return value


def _over_cap(name: str, value: int, cap: int, fix: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"'{name}' is {value}, above this gateway's limit of {cap}. {fix}",
        param=name,
        code="parameter_over_limit",
    )


def check_sampling_caps(
    payload: Mapping[str, Any],
    *,
    chat: bool,
    max_n: int,
    max_best_of: int,
    max_top_logprobs: int,
) -> int:
    """Check ``n``, ``best_of`` and the logprobs fields against the caps; return how many
    sequences each prompt generates (for the token reservation)."""
    n = _int_field(payload, "n", minimum=1) or 1
    if n > max_n:
        raise _over_cap("n", n, max_n, f"Ask for at most {max_n} choices, or send more requests.")
    best_of = _int_field(payload, "best_of", minimum=1)
    if best_of is not None:
        if best_of > max_best_of:
            raise _over_cap("best_of", best_of, max_best_of, f"Use at most {max_best_of}.")
        if best_of < n:
            raise InvalidRequestError(
                f"'best_of' ({best_of}) must be at least 'n' ({n}). Raise best_of or lower n.",
                param="best_of",
            )
    # -1 means "the whole vocabulary" to vLLM: not allowed, as it is far over any cap.
    logprob_fields = (
        ("top_logprobs", "prompt_logprobs") if chat else ("logprobs", "prompt_logprobs")
    )
    for name in logprob_fields:
        value = _int_field(payload, name, minimum=0)
        if value is not None and value > max_top_logprobs:
            raise _over_cap(
                name, value, max_top_logprobs, f"Ask for at most {max_top_logprobs} per token."
            )
    if chat and "logprobs" in payload and not isinstance(payload["logprobs"], (bool, type(None))):
        raise InvalidRequestError(
            "Invalid value for 'logprobs': on /v1/chat/completions it is true or false; set "
            "'top_logprobs' to the number of alternatives per token.",
            param="logprobs",
        )
    return max(n, best_of or n)


def normalise_stop(payload: Editable, *, max_sequences: int) -> None:
    """``stop`` as a de-duplicated list (order kept, empty strings dropped), at most
    ``max_sequences`` long; removed when nothing is left."""
    stop = payload.get("stop")
    if stop is None:
        if "stop" in payload:
            payload.drop("stop")
        return
    items = [stop] if isinstance(stop, str) else stop
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise InvalidRequestError(
            "Invalid value for 'stop': expected a string or a list of strings.", param="stop"
        )
    unique = list(dict.fromkeys(item for item in items if item))
    if len(unique) > max_sequences:
        raise InvalidRequestError(
            f"'stop' has {len(unique)} distinct sequences; at most {max_sequences} are allowed. "
            "Remove some stop sequences.",
            param="stop",
            code="parameter_over_limit",
        )
    if unique:
        payload.set("stop", unique)
    else:
        payload.drop("stop")
