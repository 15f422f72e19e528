"""The gateway's OpenAPI document describes exactly the routes the app mounts, and is valid."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from openapi_spec_validator import validate
from starlette.routing import Route

from tidegate.api.openapi import openapi_document
from tidegate.app import build_app
from tidegate.config import Config

_CONVERTOR = re.compile(r"\{(\w+):\w+\}")


def mounted(tmp_path: Path) -> set[tuple[str, str]]:
    """(METHOD, path) of every route of the app, paths written as OpenAPI writes them."""
    app = build_app(Config(home=tmp_path, engines={"replicas": 0}))
    found: set[tuple[str, str]] = set()
    for route in app.routes:
        assert isinstance(route, Route), f"{route!r}: describe mounts and hosts in the document"
        if not route.include_in_schema:  # the web console's page and assets, not the API
            continue
        methods = set(route.methods or ()) - {"HEAD"}  # Starlette adds HEAD to every GET
        assert methods, route.path
        found |= {(method, _CONVERTOR.sub(r"{\1}", route.path)) for method in methods}
    return found


def documented() -> set[tuple[str, str]]:
    paths = openapi_document("test")["paths"]
    return {(method.upper(), path) for path, item in paths.items() for method in item}


def test_every_mounted_route_is_documented_and_nothing_else(tmp_path: Path) -> None:
    routes = mounted(tmp_path)
    assert len(routes) > 40
    assert routes - documented() == set(), "add these routes to api/openapi.py OPERATIONS"
    assert documented() - routes == set(), "these documented routes are not mounted"


def test_the_document_is_valid_openapi_3_1() -> None:
    document = openapi_document("test")
    validate(document)
    assert document["openapi"].startswith("3.1")


def test_every_operation_has_errors_in_the_openai_format_and_bearer_security() -> None:
    document = openapi_document("test")
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A tidegate API key (tg-...).",
    }
    error_ref = {"$ref": "#/components/schemas/Error"}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            errors = {int(s): r for s, r in responses.items() if int(s) >= 400}
            public = operation["security"] == []
            assert public == (path in ("/healthz", "/readyz", "/openapi.json"))
            if not public:
                assert operation["security"] == [{"bearer": []}]
                assert 401 in errors, (method, path)
            if path.startswith("/admin") or path == "/metrics":
                assert 403 in errors, (method, path)
            if "requestBody" in operation:
                assert {400, 413} <= set(errors), (method, path)
            for response in errors.values():
                assert response["content"]["application/json"]["schema"] == error_ref


def test_request_bodies_come_from_the_protocol_models() -> None:
    schemas = openapi_document("test")["components"]["schemas"]
    # Derived by pydantic: the admin bodies reject unknown fields, as the models do.
    assert schemas["KeyCreate"]["additionalProperties"] is False
    assert schemas["KeyCreate"]["properties"]["role"]["enum"] == ["admin", "member"]
    assert "priority" in schemas["KeySettings"]["properties"]
    assert schemas["TenantCreate"]["properties"]["settings"] == {
        "$ref": "#/components/schemas/TenantSettings"
    }


async def test_the_gateway_serves_it_without_a_key(tmp_path: Path) -> None:
    app = build_app(Config(home=tmp_path, engines={"replicas": 0}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["info"]["title"] == "tidegate"
    assert "/v1/chat/completions" in body["paths"]
