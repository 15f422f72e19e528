"""Engine extensions through a real gateway and a real fake upstream: refused ones never reach
the upstream, allowed ones arrive untouched, and only the operator can allow them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.gateway import ADMIN_KEY, RunningGateway, auth, create_member, run_gateway
from tidegate_testing.fake_server import FakeUpstream

REMOTE_IMAGE = {"type": "image_url", "image_url": {"url": "http://169.254.169.254/latest/meta"}}
INLINE_IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


def chat(content: Any = "hello", **fields: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": [{"role": "user", "content": content}], **fields}


def error_of(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    return error


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            chat([{"type": "text", "text": "what?"}, REMOTE_IMAGE]),
            "messages[0].content[1].image_url.url",
        ),
        (chat(chat_template="{{ 'pwned' }}"), "chat_template"),
        (chat(chat_template_kwargs={"enable_thinking": True}), "chat_template_kwargs"),
        (chat(guided_regex="a+"), "guided_regex"),
        (chat(kv_transfer_params={"do_remote_prefill": True}), "kv_transfer_params"),
        (chat(priority=-100), "priority"),
    ],
)
async def test_refused_extensions_never_reach_the_upstream(
    gateway: RunningGateway, fake: FakeUpstream, body: dict[str, Any], param: str
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        member = await create_member(http, "plain")
        for stream in (False, True):
            payload = {**body, "stream": stream}
            response = await http.post("/v1/chat/completions", json=payload, headers=member.headers)
            error = error_of(response)
            assert error["param"] == param and f"'{param}'" in error["message"]
        # /v1/completions (and the batch runner) share the validator.
        fields = {k: v for k, v in body.items() if k not in ("model", "messages")}
        if fields:
            completion = {"model": "fake-model", "prompt": "hi", **fields}
            error = error_of(
                await http.post("/v1/completions", json=completion, headers=member.headers)
            )
            assert error["param"] == param
    assert fake.requests == []


async def test_the_operator_allows_an_extension_for_one_tenant(
    gateway: RunningGateway, fake: FakeUpstream
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        allowed = await create_member(
            http, "vision", {"allowed_extensions": ["remote_media_urls", "chat_template_kwargs"]}
        )
        other = await create_member(http, "text-only")
        body = chat(
            [{"type": "text", "text": "what?"}, REMOTE_IMAGE, INLINE_IMAGE],
            chat_template_kwargs={"enable_thinking": False},
        )
        answer = await http.post("/v1/chat/completions", json=body, headers=allowed.headers)
        assert answer.status_code == 200, answer.text
        error = error_of(await http.post("/v1/chat/completions", json=body, headers=other.headers))
        assert error["code"] == "extension_not_allowed"
        # Top-level fields are checked first, then the content parts.
        assert "allowed_extensions: chat_template_kwargs" in error["message"]
        # Inline media needs no allowance.
        inline = chat([{"type": "text", "text": "what?"}, INLINE_IMAGE])
        answer = await http.post("/v1/chat/completions", json=inline, headers=other.headers)
        assert answer.status_code == 200, answer.text
    assert len(fake.requests) == 2
    forwarded = fake.requests[0]
    assert forwarded["messages"][0]["content"][1] == REMOTE_IMAGE
    assert forwarded["chat_template_kwargs"] == {"enable_thinking": False}
    assert "chat_template_kwargs" not in fake.requests[1]


async def test_a_tenant_admin_cannot_widen_its_allowed_extensions(gateway: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        created = await http.post("/admin/tenants", json={"name": "acme"}, headers=auth(ADMIN_KEY))
        tenant_id = created.json()["id"]
        admin = await http.post(
            "/admin/keys",
            json={"name": "acme admin", "role": "admin", "tenant_id": tenant_id},
            headers=auth(ADMIN_KEY),
        )
        tenant_admin = auth(admin.json()["key"])
        patch = {"settings": {"allowed_extensions": ["remote_media_urls"]}}
        widened = await http.patch(f"/admin/tenants/{tenant_id}", json=patch, headers=tenant_admin)
        assert widened.status_code == 403, widened.text
        # Nor through a key of its own: keys have no such setting.
        key = await http.post(
            "/admin/keys",
            json={"name": "svc", "settings": {"allowed_extensions": ["remote_media_urls"]}},
            headers=tenant_admin,
        )
        assert key.status_code == 400, key.text
        assert "allowed_extensions" in key.json()["error"]["param"]
        tenant = await http.get(f"/admin/tenants/{tenant_id}", headers=auth(ADMIN_KEY))
        assert tenant.json()["settings"].get("allowed_extensions", []) == []
        # The operator can.
        done = await http.patch(f"/admin/tenants/{tenant_id}", json=patch, headers=auth(ADMIN_KEY))
        assert done.status_code == 200, done.text
        assert done.json()["settings"]["allowed_extensions"] == ["remote_media_urls"]


async def test_batch_lines_with_refused_extensions_fail_with_their_line_number(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    from tests.integration.test_batches_api import FAST, chat_line, client, submit, wait_for

    async with (
        run_gateway(tmp_path, upstreams=[fake], sections={"batch": FAST}) as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=30) as http,
    ):
        member = await create_member(http, "batcher")
        api = client(gateway, member)
        lines = [
            chat_line("ok"),
            chat_line("template", chat_template="{{ messages }}"),
            chat_line("remote", messages=[{"role": "user", "content": [REMOTE_IMAGE]}]),
        ]
        created = await submit(api, lines)
        failed = await wait_for(api, created.id, "failed", "completed")
    assert failed.status == "failed" and failed.errors is not None and failed.errors.data
    by_line = {e.line: e for e in failed.errors.data}
    assert sorted(by_line) == [2, 3]
    assert by_line[2].param == "chat_template" and by_line[2].code == "extension_not_allowed"
    assert by_line[3].param == "messages[0].content[0].image_url.url"
    assert fake.requests == []
