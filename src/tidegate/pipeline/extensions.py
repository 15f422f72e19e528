"""Engine extensions the gateway owns: request fields that make the engine fetch URLs, run other
templates or code paths, or change its scheduling, forwarded only where an operator allows them.

vLLM's OpenAI server accepts many fields beyond OpenAI's API (``chat_template``,
``mm_processor_kwargs``, ``kv_transfer_params`` ...), and image, audio and video content parts
whose URLs it fetches itself: from a shared engine, that is a server-side request forgery and
a way for one tenant to change how the engine treats everyone's requests. So each is refused
unless the tenant's ``settings.allowed_extensions`` names it (an operator-owned setting), and a
few the gateway sets itself are never taken from a client. Content-part URLs must be ``data:``
URLs unless ``remote_media_urls`` is allowed, and then only http(s).

The table here is what README's "Engine extensions" table documents; keep the two together.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator, Mapping
from functools import partial
from typing import Any

from tidegate.errors import InvalidRequestError
from tidegate.protocol.extension_names import EXTENSIONS, ForwardedExtension

__all__ = [
    "EXTENSIONS",
    "EXTENSION_FIELDS",
    "GATEWAY_OWNED",
    "ForwardedExtension",
    "check_extensions",
]


EXTENSION_FIELDS: dict[str, ForwardedExtension] = {
    "chat_template": "chat_template",
    "chat_template_kwargs": "chat_template_kwargs",
    "add_generation_prompt": "add_generation_prompt",
    "continue_final_message": "continue_final_message",
    "add_special_tokens": "add_special_tokens",
    "documents": "documents",
    "mm_processor_kwargs": "mm_processor_kwargs",
    "media_io_kwargs": "media_io_kwargs",
    "structured_outputs": "structured_outputs",
    # vLLM's older structured-output fields: one allowance for all of them.
    "guided_json": "guided_decoding",
    "guided_regex": "guided_decoding",
    "guided_choice": "guided_decoding",
    "guided_grammar": "guided_decoding",
    "guided_decoding_backend": "guided_decoding",
    "guided_whitespace_pattern": "guided_decoding",
    "logits_processors": "logits_processors",
    "return_tokens_as_token_ids": "return_tokens_as_token_ids",
    "return_token_ids": "return_token_ids",
    "return_prompt_text": "return_prompt_text",
    "prompt_logprobs": "prompt_logprobs",
    "cache_salt": "cache_salt",
    "kv_transfer_params": "kv_transfer_params",
    "ec_transfer_params": "kv_transfer_params",
    "vllm_xargs": "vllm_xargs",
    # Serialised tensors the engine deserialises (vLLM has had a CVE in exactly this path).
    "prompt_embeds": "embeddings_input",
}
"""Top-level request field → the allowance that lets it through."""

GATEWAY_OWNED: dict[str, str] = {
    "priority": "the gateway sets the engine priority from the key's scheduling class (send "
    "the x-tidegate-priority header to ask for a lower class)",
    "request_id": "the gateway gives every request its own id (send x-request-id to correlate)",
}
"""Fields no tenant may set, whatever its settings."""

# Values equal to vLLM's defaults change nothing, and some client libraries send them.
_HARMLESS: dict[str, object] = {
    "add_generation_prompt": True,
    "continue_final_message": False,
    "add_special_tokens": False,
    "return_tokens_as_token_ids": False,
    "return_token_ids": False,
    "return_prompt_text": False,
}
_TOP_LEVEL = frozenset(EXTENSION_FIELDS) | frozenset(GATEWAY_OWNED)
_EMBEDS_PARTS = frozenset({"image_embeds", "audio_embeds"})
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
# Fields of a content part that carry base64 data, which is a URL only if it looks like one.
_DATA_FIELDS = frozenset({"data", "file_data"})


def check_extensions(payload: Mapping[str, Any], allowed: Collection[str]) -> None:
    """Refuse (400) the first extension field or content part ``allowed`` does not allow."""
    # One set intersection in C for the common case of none; sorted so the error is stable.
    for name in sorted(payload.keys() & _TOP_LEVEL):
        why = GATEWAY_OWNED.get(name)
        if why is not None:
            raise InvalidRequestError(
                f"The field '{name}' cannot be set by clients: {why}. Remove it from the request.",
                param=name,
                code="gateway_owned_field",
            )
        extension = EXTENSION_FIELDS.get(name)
        if extension is not None and extension not in allowed and not _harmless(name, payload):
            raise _not_allowed(name, extension, "it changes how the engine runs the request")
    messages = payload.get("messages")
    if isinstance(messages, list):
        _check_messages(messages, allowed)


def _harmless(name: str, payload: Mapping[str, Any]) -> bool:
    value = payload[name]
    # `is`: 0 and 1 are not False and True here.
    return value is None or (name in _HARMLESS and value is _HARMLESS[name])


def _check_messages(messages: list[Any], allowed: Collection[str]) -> None:
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for j, part in enumerate(content):
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if kind == "text":
                continue
            if kind in _EMBEDS_PARTS and "embeddings_input" not in allowed:
                raise _not_allowed(
                    f"messages[{i}].content[{j}].{kind}",
                    "embeddings_input",
                    "the engine deserialises tensors",
                )
            for keys, url in _urls(part):
                refusal = _url_refusal(url, allowed)
                if refusal is not None:
                    raise refusal(".".join((f"messages[{i}].content[{j}]", *keys)))


def _urls(part: Mapping[str, Any]) -> Iterator[tuple[tuple[str, ...], str]]:
    """Every URL a content part carries, with the keys that lead to it: ``url`` and ``*_url``
    fields, one level deep (vLLM's ``{"image_url": {"url": ...}}`` and the bare
    ``{"image_url": "..."}``), and data fields whose value has a scheme."""
    for key, value in part.items():
        if isinstance(value, str):
            if _url_field(key, value):
                yield (key,), value
        elif isinstance(value, dict):
            for inner, item in value.items():
                if isinstance(item, str) and _url_field(inner, item):
                    yield (key, inner), item


def _url_field(key: str, value: str) -> bool:
    if key == "url" or key.endswith("_url"):
        return True
    return key in _DATA_FIELDS and "://" in value[:40]


def _url_refusal(url: str, allowed: Collection[str]) -> Callable[[str], InvalidRequestError] | None:
    """None when ``url`` may be forwarded; else what makes the error, given the field's path
    (built only then)."""
    match = _SCHEME.match(url)
    scheme = match.group(1).lower() if match else ""
    if scheme == "data" or (scheme in ("http", "https") and "remote_media_urls" in allowed):
        return None
    if scheme in ("http", "https"):
        return _remote_refused
    return partial(_scheme_refused, scheme)


def _remote_refused(path: str) -> InvalidRequestError:
    return _not_allowed(
        path,
        "remote_media_urls",
        "the engine would fetch this URL itself; send the media inline as a data: URL "
        "(data:image/png;base64,...)",
    )


def _scheme_refused(scheme: str, path: str) -> InvalidRequestError:
    shown = f"'{scheme}:' URLs are" if scheme else "URLs without a scheme are"
    return InvalidRequestError(
        f"Invalid value for '{path}': {shown} not accepted. Send the media inline as a data: "
        "URL (data:image/png;base64,...); an operator can allow http(s) URLs for your tenant "
        "(settings.allowed_extensions: remote_media_urls).",
        param=path,
        code="media_url_not_allowed",
    )


def _not_allowed(path: str, extension: str, why: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"The field '{path}' is not forwarded for your tenant ({why}). Remove it, or ask an "
        f"operator to allow it for your tenant (settings.allowed_extensions: {extension}).",
        param=path,
        code="extension_not_allowed",
    )
