"""The forwarded-extension policy: engine extensions and remote media only where allowed."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tidegate.config import ValidationConfig
from tidegate.errors import InvalidRequestError
from tidegate.pipeline.extensions import EXTENSION_FIELDS, EXTENSIONS, check_extensions
from tidegate.pipeline.validation import RequestValidator
from tidegate.protocol.requests import CompletionRequest
from tidegate.tenancy.policy import KeySettings, TenantSettings


def chat(content: Any, **fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": content}], **fields}


def image(url: Any, kind: str = "image_url") -> list[dict[str, Any]]:
    return [{"type": "text", "text": "what is this?"}, {"type": kind, kind: url}]


def refused(payload: dict[str, Any], allowed: list[str] | None = None) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        check_extensions(payload, allowed or [])
    assert caught.value.status == 400
    return caught.value


@pytest.mark.parametrize("field", sorted(EXTENSION_FIELDS))
def test_every_extension_is_refused_by_default_and_names_its_allowance(field: str) -> None:
    error = refused(chat("hi", **{field: {"x": 1}}))
    assert (error.param, error.code) == (field, "extension_not_allowed")
    allowance = EXTENSION_FIELDS[field]
    assert f"allowed_extensions: {allowance}" in error.message
    assert "operator" in error.message
    check_extensions(chat("hi", **{field: {"x": 1}}), [allowance])


def test_every_allowance_is_documented_in_the_readme() -> None:
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for name in EXTENSIONS:
        assert f"`{name}`" in readme, name


def test_plain_openai_requests_pass() -> None:
    payload = chat(
        image({"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}),
        temperature=0.2,
        response_format={"type": "json_object"},
        tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        top_k=5,
    )
    check_extensions(payload, [])


def test_defaults_sent_explicitly_are_harmless() -> None:
    check_extensions(chat("hi", add_generation_prompt=True, continue_final_message=False), [])
    check_extensions(chat("hi", chat_template=None), [])
    error = refused(chat("hi", add_generation_prompt=False))
    assert error.param == "add_generation_prompt"


@pytest.mark.parametrize("field", ["priority", "request_id"])
def test_gateway_owned_fields_are_never_forwarded(field: str) -> None:
    every = list(EXTENSIONS)
    error = refused(chat("hi", **{field: 0}), every)
    assert (error.param, error.code) == (field, "gateway_owned_field")
    assert "cannot be set by clients" in error.message


@pytest.mark.parametrize(
    ("content", "param"),
    [
        (image({"url": "https://169.254.169.254/latest"}), "messages[0].content[1].image_url.url"),
        (image("http://intranet/cat.png"), "messages[0].content[1].image_url"),
        (image({"url": "https://x/a.wav"}, "audio_url"), "messages[0].content[1].audio_url.url"),
        (image({"url": "https://x/a.mp4"}, "video_url"), "messages[0].content[1].video_url.url"),
        (
            [{"type": "input_audio", "input_audio": {"data": "https://x/a.wav", "format": "wav"}}],
            "messages[0].content[0].input_audio.data",
        ),
        (
            [{"type": "file", "file": {"file_data": "http://x/doc.pdf"}}],
            "messages[0].content[0].file.file_data",
        ),
    ],
)
def test_remote_media_needs_the_allowance(content: Any, param: str) -> None:
    error = refused(chat(content))
    assert (error.param, error.code) == (param, "extension_not_allowed")
    assert "data: URL" in error.message
    assert "remote_media_urls" in error.message
    check_extensions(chat(content), ["remote_media_urls"])


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://x/y", "cat.png", "FILE:/x"])
def test_other_url_schemes_are_refused_even_when_remote_media_is_allowed(url: str) -> None:
    error = refused(chat(image({"url": url})), ["remote_media_urls"])
    assert (error.param, error.code) == (
        "messages[0].content[1].image_url.url",
        "media_url_not_allowed",
    )


def test_base64_audio_and_inline_files_pass() -> None:
    content = [
        {"type": "input_audio", "input_audio": {"data": "UklGRiQAAABXQVZF", "format": "wav"}},
        {
            "type": "file",
            "file": {"file_data": "data:application/pdf;base64,JVBER", "filename": "a"},
        },
    ]
    check_extensions(chat(content), [])


def test_embedding_parts_need_the_allowance() -> None:
    content = [{"type": "image_embeds", "image_embeds": "UEsDBBQ="}]
    error = refused(chat(content))
    assert error.param == "messages[0].content[0].image_embeds"
    check_extensions(chat(content), ["embeddings_input"])


def test_later_messages_are_checked_too() -> None:
    payload = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": image({"url": "data:image/png;base64,AA=="})},
            {"role": "user", "content": image({"url": "https://x/y.png"})},
        ],
    }
    assert refused(payload).param == "messages[2].content[1].image_url.url"


def test_tenant_settings_accept_only_known_extensions() -> None:
    settings = TenantSettings.model_validate({"allowed_extensions": ["chat_template"]})
    assert settings.allowed_extensions == ["chat_template"]
    assert TenantSettings().allowed_extensions == []
    with pytest.raises(ValidationError):
        TenantSettings.model_validate({"allowed_extensions": ["priority"]})
    with pytest.raises(ValidationError):
        KeySettings.model_validate({"allowed_extensions": ["chat_template"]})


async def test_the_validator_applies_the_tenants_allowances() -> None:
    validator = RequestValidator(config=ValidationConfig(), models={})
    payload = chat("hi", chat_template_kwargs={"enable_thinking": True})
    with pytest.raises(InvalidRequestError) as caught:
        await validator.check(
            "chat", CompletionRequest("chat", dict(payload)), TenantSettings(), KeySettings(), "m"
        )
    assert caught.value.param == "chat_template_kwargs"
    tenant = TenantSettings(allowed_extensions=["chat_template_kwargs"])
    checked = await validator.check(
        "chat", CompletionRequest("chat", dict(payload)), tenant, KeySettings(), "m"
    )
    assert checked.payload["chat_template_kwargs"] == {"enable_thinking": True}


async def test_completions_prompt_embeds_are_refused() -> None:
    validator = RequestValidator(config=ValidationConfig(), models={})
    payload = {"model": "m", "prompt": "hi", "prompt_embeds": "UEsDBBQ="}
    with pytest.raises(InvalidRequestError) as caught:
        await validator.check(
            "completions",
            CompletionRequest("completions", payload),
            TenantSettings(),
            KeySettings(),
            "m",
        )
    assert (caught.value.param, caught.value.code) == ("prompt_embeds", "extension_not_allowed")
