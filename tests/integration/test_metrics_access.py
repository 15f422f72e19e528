"""/metrics names tenants: on the API port only a metrics token or an operator's admin key gets
it; the metrics listener serves it without a token; no open route says anything about tenants."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from tests.support.gateway import ADMIN_KEY, auth, create_member, free_port, run_gateway
from tidegate.observability.metrics_listener import MetricsListener
from tidegate_testing.fake_server import FakeUpstream

TENANT = "secret-tenant-name-7f3a"
TOKEN = "metrics-token-0123456789abcdef"
CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hello"}]}


async def _traffic(http: httpx.AsyncClient) -> dict[str, str]:
    """A tenant that served one request, so its name is in the metrics; its member key."""
    member = await create_member(http, TENANT, {"allowed_models": ["fake-model"]})
    answer = await http.post("/v1/chat/completions", json=CHAT, headers=member.headers)
    assert answer.status_code == 200, answer.text
    return member.headers


def _refused(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert TENANT not in response.text and "tidegate_" not in response.text
    error: dict[str, Any] = response.json()["error"]
    assert "server.metrics_token" in error["message"]
    assert "server.metrics_port" in error["message"]
    return error


async def test_the_api_port_serves_metrics_only_to_a_token_or_the_operator(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    async with (
        run_gateway(tmp_path, upstreams=[fake], metrics_token=TOKEN) as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=30) as http,
    ):
        member = await _traffic(http)
        assert _refused(await http.get("/metrics"), 401)["code"] == "metrics_token_required"
        wrong = await http.get("/metrics", headers=auth("not-the-token"))
        assert _refused(wrong, 401)["code"] == "invalid_metrics_token"
        # A tenant's own keys, member or admin, are not enough: the series name every tenant.
        _refused(await http.get("/metrics", headers=member), 403)
        tenant_id = (await http.get("/admin/tenants", headers=auth(ADMIN_KEY))).json()["data"]
        tenant = next(t["id"] for t in tenant_id if t["name"] == TENANT)
        admin = await http.post(
            "/admin/keys",
            json={"name": "team admin", "role": "admin", "tenant_id": tenant},
            headers=auth(ADMIN_KEY),
        )
        _refused(await http.get("/metrics", headers=auth(admin.json()["key"])), 403)
        for key in (TOKEN, ADMIN_KEY):
            served = await http.get("/metrics", headers=auth(key))
            assert served.status_code == 200, served.text
            assert f'tidegate_tenant_requests_total{{outcome="ok",tenant="{TENANT}"}} 1.0' in (
                served.text
            )


async def test_the_metrics_listener_needs_no_token(tmp_path: Path, fake: FakeUpstream) -> None:
    port = free_port()
    async with (
        run_gateway(tmp_path, upstreams=[fake], metrics_port=port) as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=30) as http,
    ):
        await _traffic(http)
        served = await http.get(f"http://127.0.0.1:{port}/metrics")
        assert served.status_code == 200
        assert served.headers["content-type"].startswith("text/plain")
        assert 'tidegate_requests_total{model="fake-model",outcome="ok",route="chat"} 1.0' in (
            served.text
        )
        assert f'tenant="{TENANT}"' in served.text
        # It serves nothing else: not the API, not the admin routes.
        for path in ("/v1/models", "/admin/tenants", "/healthz"):
            assert (await http.get(f"http://127.0.0.1:{port}{path}")).status_code == 404
        # And the API port still refuses /metrics without a token.
        _refused(await http.get("/metrics"), 401)


async def test_a_taken_metrics_port_fails_the_start_with_the_setting_named() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        listener = MetricsListener(registry=CollectorRegistry(), host="127.0.0.1", port=port)
        with pytest.raises(OSError, match=r"server\.metrics_host and server\.metrics_port"):
            await listener.start()


async def test_port_0_picks_a_free_port() -> None:
    listener = MetricsListener(registry=CollectorRegistry(), host="127.0.0.1", port=0)
    await listener.start()
    try:
        assert listener.port > 0 and listener.url.endswith(f":{listener.port}/metrics")
        async with httpx.AsyncClient() as http:
            assert (await http.get(listener.url)).status_code == 200
    finally:
        await listener.stop()


async def test_open_routes_say_nothing_about_tenants_or_keys(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    async with (
        run_gateway(tmp_path, upstreams=[fake]) as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=30) as http,
    ):
        await _traffic(http)
        for path in ("/healthz", "/readyz", "/v1/models", "/metrics", "/no-such-route"):
            response = await http.get(path)
            assert TENANT not in response.text, path
            assert "tg-" not in response.text, path
        assert (await http.get("/v1/models")).status_code == 401


async def test_models_lists_only_what_the_key_may_use(tmp_path: Path) -> None:
    upstreams = [FakeUpstream(model="fake-model"), FakeUpstream(model="other-model")]
    for upstream in upstreams:
        await upstream.start()
    try:
        async with (
            run_gateway(tmp_path, upstreams=upstreams) as gateway,
            httpx.AsyncClient(base_url=gateway.url, timeout=30) as http,
        ):
            member = await create_member(http, "narrow", {"allowed_models": ["fake-model"]})
            listed = await http.get("/v1/models", headers=member.headers)
            assert [m["id"] for m in listed.json()["data"]] == ["fake-model"]
            everything = await http.get("/v1/models", headers=auth(ADMIN_KEY))
            assert {m["id"] for m in everything.json()["data"]} == {"fake-model", "other-model"}
    finally:
        for upstream in upstreams:
            await upstream.stop()
