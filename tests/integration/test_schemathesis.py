"""Schemathesis against the gateway's own OpenAPI document: every operation, valid and invalid
inputs, with a fixed seed and a bounded number of cases.

A real gateway (SQLite store, fake upstream, batches and rollouts on) runs on loopback in a
thread of its own, so schemathesis' blocking client can call it. The operator's admin key (and
for a third of the cases the tenant's own admin key) calls /admin, a tenant's member key /v1.
Every answer must be a non-5xx whose status, content type and body (each event of a stream)
are the ones the document declares.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import schemathesis
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.gateway import ADMIN_KEY, auth, create_member, run_gateway
from tidegate_testing.fake_server import FakeUpstream

MAX_EXAMPLES = 25
"""Cases per operation (about 45 operations); the whole module runs in about a minute."""
SEED = 1313
MODEL = "fake-model"
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]


@dataclass(frozen=True)
class LiveGateway:
    url: str
    tenant_key: str
    """A member key of the tenant."""
    tenant_admin_key: str
    """An admin key of the same tenant (narrower than the operator's)."""


class _Errors(logging.Handler):
    """The gateway's recent error logs (a 500 is logged with its traceback), to show with a
    failing case."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: deque[str] = deque(maxlen=5)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(logging.Formatter().format(record))


@pytest.fixture(scope="module")
def gateway_errors() -> Iterator[_Errors]:
    handler = _Errors()
    logger = logging.getLogger("tidegate")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@pytest.fixture(scope="module")
def live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    home = tmp_path_factory.mktemp("schemathesis")
    started: list[LiveGateway] = []
    failure: list[BaseException] = []
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main(home: Path) -> None:
        fake = FakeUpstream(model=MODEL)
        await fake.start()
        try:
            async with run_gateway(home, upstreams=[fake], idle_timeout_s=5.0) as gateway:
                async with httpx.AsyncClient(base_url=gateway.url) as http:
                    member = await create_member(http, "fuzzed tenant")
                    body = {"name": "tenant admin", "role": "admin", "tenant_id": member.tenant_id}
                    admin = await http.post("/admin/keys", json=body, headers=auth(ADMIN_KEY))
                    assert admin.status_code == 201, admin.text
                started.append(LiveGateway(gateway.url, member.key, admin.json()["key"]))
                ready.set()
                await stop.wait()
        finally:
            await fake.stop()

    def run() -> None:
        try:
            loop.run_until_complete(main(home))
        except BaseException as error:  # reported to the test thread
            failure.append(error)
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="gateway", daemon=True)
    thread.start()
    ready.wait(timeout=60)
    if failure or not started:
        raise RuntimeError(f"the gateway did not start: {failure}")
    yield started[0]
    loop.call_soon_threadsafe(stop.set)
    thread.join(timeout=60)
    assert not failure, failure


@pytest.fixture(scope="module")
def api_schema(live_gateway: LiveGateway) -> schemathesis.BaseSchema:
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "mode": "all",
                "with-security-parameters": False,
                "database": "none",
            },
            "phases": {"stateful": {"enabled": False}},
        }
    )
    return schemathesis.openapi.from_url(live_gateway.url + "/openapi.json", config=config)


def _served(name: object) -> object:
    """Every other generated model name becomes the one the gateway serves, so cases reach the
    upstream (and the traffic and rollout logic) as well as the unknown-model answers."""
    if isinstance(name, str) and name and len(name) % 2 == 1:
        return MODEL
    return name


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_no_server_errors_and_answers_match_the_document(
    case: Case, live_gateway: LiveGateway, gateway_errors: _Errors
) -> None:
    headers = {}
    if case.path.startswith("/admin") or case.path == "/metrics":
        # Mostly the operator; every third case (chosen by its content, so the run stays
        # deterministic) the tenant's own admin, who must get 403s and 404s, never more.
        tenant_admin = zlib.crc32(repr((case.path_parameters, case.query, case.body)).encode()) % 3
        headers = auth(live_gateway.tenant_admin_key if tenant_admin == 0 else ADMIN_KEY)
    elif case.path.startswith("/v1"):
        headers = auth(live_gateway.tenant_key)
    if isinstance(case.body, dict) and "model" in case.body:
        case.body["model"] = _served(case.body["model"])
    if case.path_parameters and "model" in case.path_parameters:
        case.path_parameters["model"] = _served(case.path_parameters["model"])
    gateway_errors.records.clear()
    try:
        case.call_and_validate(headers=headers, checks=CHECKS, timeout=30)
    except (Exception, BaseExceptionGroup) as failure:  # schemathesis' FailureGroup is the latter
        if not gateway_errors.records:
            raise
        # Schemathesis drops exception notes from its report: carry the log in the message.
        logged = "\n".join(gateway_errors.records)
        raise AssertionError(f"{failure}\n\nThe gateway logged:\n{logged}") from failure
