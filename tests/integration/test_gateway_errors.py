"""Bad input gets a clear OpenAI-format error, and nothing rejected reaches the upstream."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.support.gateway import ADMIN_KEY, RunningGateway
from tidegate_testing.fake_server import FakeUpstream

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


async def _post(
    gateway: RunningGateway, body: bytes | dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], aiohttp.typedefs.LooseHeaders]:
    headers = AUTH if headers is None else headers
    async with aiohttp.ClientSession() as http:
        kwargs: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
        async with http.post(
            f"{gateway.base_url}/chat/completions", headers=headers, **kwargs
        ) as response:
            return response.status, await response.json(), response.headers


def _assert_openai_error(body: dict[str, Any], error_type: str) -> str:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == error_type
    message: str = body["error"]["message"]
    assert len(message) > 20
    return message


@pytest.mark.parametrize(
    ("headers", "hint"),
    [
        ({}, "didn't provide an API key"),
        ({"Authorization": "Bearer tg-not-a-real-key-000000000000"}, "Incorrect API key"),
        ({"Authorization": f"Basic {ADMIN_KEY}"}, "no `Bearer ` prefix"),
        ({"Authorization": ADMIN_KEY}, "must read `Bearer <key>`"),
    ],
)
async def test_missing_or_unknown_key_is_401(
    gateway: RunningGateway, fake: FakeUpstream, headers: dict[str, str], hint: str
) -> None:
    status, body, response_headers = await _post(gateway, CHAT, headers)
    assert status == 401
    assert hint in _assert_openai_error(body, "authentication_error")
    assert response_headers["www-authenticate"] == "Bearer"
    assert fake.requests == []


async def test_models_route_needs_a_key(gateway: RunningGateway) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway.base_url}/models") as response:
            assert response.status == 401
            _assert_openai_error(await response.json(), "authentication_error")


@pytest.mark.parametrize(
    ("body", "param", "hint"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"[1, 2]", None, "must be a JSON object"),
        ({"model": "fake-model"}, "messages", "Missing required parameter: 'messages'"),
        ({"messages": CHAT["messages"]}, "model", "Missing required parameter: 'model'"),
        ({**CHAT, "temperature": 7}, "temperature", "Invalid value for 'temperature'"),
        ({**CHAT, "max_tokens": 0}, "max_tokens", "Invalid value for 'max_tokens'"),
        ({**CHAT, "messages": []}, "messages", "Invalid value for 'messages'"),
        ({**CHAT, "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role", "role"),
        ({**CHAT, "stream": "yes please"}, "stream", "Invalid value for 'stream'"),
    ],
)
async def test_malformed_requests_are_400_and_never_reach_upstream(
    gateway: RunningGateway,
    fake: FakeUpstream,
    body: bytes | dict[str, Any],
    param: str | None,
    hint: str,
) -> None:
    status, response, _ = await _post(gateway, body)
    assert status == 400
    message = _assert_openai_error(response, "invalid_request_error")
    assert hint in message
    assert response["error"]["param"] == param
    assert fake.requests == []


async def test_deeply_nested_json_is_rejected(gateway: RunningGateway, fake: FakeUpstream) -> None:
    nested = b'{"model": "fake-model", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    status, response, _ = await _post(gateway, nested)
    assert status == 400
    _assert_openai_error(response, "invalid_request_error")
    assert fake.requests == []


async def test_unknown_model_is_404_and_names_the_served_ones(
    gateway: RunningGateway, fake: FakeUpstream
) -> None:
    status, body, _ = await _post(gateway, {**CHAT, "model": "gpt-17"})
    assert status == 404
    message = _assert_openai_error(body, "not_found_error")
    assert "gpt-17" in message and "fake-model" in message
    assert body["error"]["code"] == "model_not_found"
    assert fake.requests == []


async def test_body_over_the_limit_is_413(gateway: RunningGateway, fake: FakeUpstream) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * (5 * 1024 * 1024)}]}
    status, body, _ = await _post(gateway, big)
    assert status == 413
    assert "server.max_body_bytes" in _assert_openai_error(body, "invalid_request_error")
    assert fake.requests == []


async def test_wrong_method_is_405_in_openai_format(gateway: RunningGateway) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway.base_url}/chat/completions", headers=AUTH) as response:
            assert response.status == 405
            message = _assert_openai_error(await response.json(), "invalid_request_error")
            assert message.endswith("Use POST.") and response.headers["allow"] == "POST"
        async with http.delete(f"{gateway.base_url}/models", headers=AUTH) as response:
            assert response.status == 405 and response.headers["allow"] == "GET"


async def test_unknown_path_lists_every_openai_route(gateway: RunningGateway) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway.base_url}/nowhere", headers=AUTH) as response:
            assert response.status == 404
            message = _assert_openai_error(await response.json(), "not_found_error")
            assert "/v1/files" in message and "/v1/batches" in message
