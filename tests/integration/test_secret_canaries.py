"""No key ever reaches a sink: planted canary keys, many kinds of requests, then a grep of
everything the gateway wrote or answered.

Canaries: the operator key, a member key created through the admin API (and later revoked), an
upstream api_key from the config, a key sent as a wrong Bearer, keys inside prompts of a tenant
that logs prompts. Sinks: the access log, log records and stderr, /metrics, exported spans
(names, attributes, events, status), every error body and every response header, the audit
log, usage records, the prompt_logs rows, the `tidegate usage export` CSV and its output, and
the raw bytes of every file under the gateway's home (SQLite database, its WAL and journal
files, the usage write-ahead files).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.gateway import (
    ADMIN_KEY,
    auth,
    create_member,
    run_gateway,
    usage_records,
)
from tidegate_testing.fake_server import FakeUpstream

UPSTREAM_KEY = "sk-upstreamcanary" + "U7x2" * 8
WRONG_KEY = "tg-wrongcanary" + "W3q9" * 10
PROMPT_KEY = "tg-promptcanary" + "P5k8" * 10
PROMPT_OPENAI_KEY = "sk-proj-promptcanary" + "Q4m1" * 8


def fragments(secret: str) -> list[str]:
    """The whole secret and its tail: a truncated or prefixed copy is a leak too (the store
    keeps a short display prefix of gateway keys, so the head alone is not checked)."""
    return [secret, secret[-20:]]


def chat(content: str = "hello", **fields: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": [{"role": "user", "content": content}], **fields}


async def test_no_canary_reaches_any_sink(
    tmp_path: Path,
    fake: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    exporter = InMemorySpanExporter()
    answers: list[httpx.Response] = []
    home = tmp_path / "home"
    fake.behaviour.tokens = 3

    async with (
        run_gateway(
            home,
            upstreams=[fake],
            upstream_options={"api_key": UPSTREAM_KEY},
            sections={
                "metering": {"flush_interval_s": 0.05},
                "telemetry": {"service_name": "tidegate-canaries"},
            },
            span_exporter=exporter,
        ) as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=30) as http,
    ):

        async def call(method: str, path: str, key: str, **kwargs: Any) -> httpx.Response:
            response = await http.request(method, path, headers=auth(key), **kwargs)
            answers.append(response)
            return response

        logged = await create_member(http, "canary-logged", {"log_prompts": True})
        limited = await create_member(
            http, "canary-limited", {"limits": {"requests_per_minute": 1}}
        )
        member_key = logged.key
        canaries = {
            "operator key": ADMIN_KEY,
            "member key": member_key,
            "limited member key": limited.key,
            "upstream api_key": UPSTREAM_KEY,
            "wrong bearer": WRONG_KEY,
            "key in prompt": PROMPT_KEY,
            "openai key in prompt": PROMPT_OPENAI_KEY,
        }

        secret_prompt = f"my key is {PROMPT_KEY} and Bearer {PROMPT_OPENAI_KEY}, please help"
        statuses = [
            # Completions that reach the upstream, plain and streamed, with keys in the prompt.
            (await call("POST", "/v1/chat/completions", member_key, json=chat(secret_prompt))),
            (
                await call(
                    "POST",
                    "/v1/chat/completions",
                    member_key,
                    json=chat(secret_prompt, stream=True),
                )
            ),
            (
                await call(
                    "POST",
                    "/v1/completions",
                    member_key,
                    json={"model": "fake-model", "prompt": secret_prompt},
                )
            ),
            # Refused: wrong key, no key's scheme, invalid body, unknown model, rate limit.
            (await call("POST", "/v1/chat/completions", WRONG_KEY, json=chat())),
            (await call("POST", "/v1/chat/completions", WRONG_KEY, json=chat(secret_prompt))),
            (await call("POST", "/v1/chat/completions", member_key, json=chat(secret_prompt, n=0))),
            (
                await call(
                    "POST",
                    "/v1/chat/completions",
                    member_key,
                    json={**chat(secret_prompt), "model": "missing-model"},
                )
            ),
            (await call("POST", "/v1/chat/completions", member_key, content=b"{not json")),
            (await call("POST", "/v1/chat/completions", limited.key, json=chat())),
            (await call("POST", "/v1/chat/completions", limited.key, json=chat())),
            # Admin calls: reads, a member key at the admin API, a wrong key, a change.
            (await call("GET", "/admin/tenants", ADMIN_KEY)),
            (await call("GET", "/admin/keys", ADMIN_KEY)),
            (await call("GET", f"/admin/keys/{logged.key_id}", ADMIN_KEY)),
            (await call("GET", "/admin/tenants", member_key)),
            (await call("GET", "/admin/audit", WRONG_KEY)),
            (await call("GET", "/admin/usage", ADMIN_KEY)),
            (
                await call(
                    "PATCH",
                    f"/admin/tenants/{limited.tenant_id}",
                    ADMIN_KEY,
                    json={"settings": {"limits": {"requests_per_minute": 5}}},
                )
            ),
            (await call("POST", "/admin/keys", ADMIN_KEY, json={"name": "x", "role": "root"})),
        ]
        # The upstream fails: its error passes through the gateway.
        fake.behaviour.fault = "status_500"
        statuses.append(await call("POST", "/v1/chat/completions", member_key, json=chat()))
        fake.behaviour.fault = "none"
        # A revoked key is refused afterwards (after the key cache's TTL).
        revoked = await create_member(http, "canary-revoked")
        canaries["revoked key"] = revoked.key
        assert (await call("DELETE", f"/admin/keys/{revoked.key_id}", ADMIN_KEY)).is_success
        await asyncio.sleep(0)
        statuses.append(await call("POST", "/v1/chat/completions", revoked.key, json=chat()))

        codes = [r.status_code for r in statuses]
        assert codes[:3] == [200, 200, 200]
        assert codes[3:10] == [401, 401, 400, 404, 400, 200, 429], codes
        assert codes[10:18] == [200, 200, 200, 403, 401, 200, 200, 400], codes
        assert codes[18] == 502 and codes[19] == 401, codes
        # The upstream did get its own key, and the prompt (that is its job).
        assert fake.request_headers[0]["authorization"] == f"Bearer {UPSTREAM_KEY}"
        assert PROMPT_KEY in fake.requests[0]["messages"][0]["content"]

        request_ids = [
            r.headers["x-request-id"] for r in statuses if r.request.url.path.startswith("/v1/")
        ]
        # Requests of a known key are metered (refused ones included); 401s have no tenant.
        metered = [r.headers["x-request-id"] for r in statuses[:10] if r.status_code != 401]
        records = await usage_records(http, metered)
        assert len({r["request_id"] for r in records}) == len(records)
        audit = await http.get("/admin/audit", params={"limit": "100"}, headers=auth(ADMIN_KEY))
        assert audit.status_code == 200 and len(audit.json()["data"]) >= 4
        metrics = (
            await http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        ).text
        access = gateway.access_sink
        # Prompt logs reach the store off the request path: wait for the three logged requests.
        deadline = asyncio.get_running_loop().time() + 10
        while len(prompt_rows(home)) < 3:
            assert asyncio.get_running_loop().time() < deadline, prompt_rows(home)
            await asyncio.sleep(0.02)
        # The files as they are while the gateway runs (journals and write-ahead files too).
        live_files = {
            f"live file {path.relative_to(home)}": path.read_bytes().decode("latin-1")
            for path in home.rglob("*")
            if path.is_file()
        }

    # The gateway has stopped: every buffer is flushed, every span exported.
    export_csv = tmp_path / "usage.csv"
    cli = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "tidegate"),
        "usage",
        "export",
        "--out",
        str(export_csv),
        env={**os.environ, "TIDEGATE_HOME": str(home), "TIDEGATE_CONFIG": ""},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    cli_out, cli_err = await asyncio.wait_for(cli.communicate(), timeout=120)
    assert cli.returncode == 0, cli_err.decode()
    exported = export_csv.read_text()
    assert all(rid in exported for rid in metered)

    spans = exporter.get_finished_spans()
    assert spans, "no spans were exported"
    prompts = prompt_rows(home)
    assert sum("please help" in row for row in prompts) == 3
    captured = capfd.readouterr()

    sinks: dict[str, str] = {
        "access log": access.getvalue().decode(),
        "log records": caplog.text
        + "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records),
        "stdout and stderr": captured.out + captured.err,
        "/metrics": metrics,
        "spans": "\n".join(span.to_json() for span in spans),
        "error bodies and all headers": "\n".join(
            f"{r.status_code} {dict(r.headers)} {r.text if r.status_code >= 400 else ''}"
            for r in answers
        ),
        "audit log": audit.text,
        "usage records": repr(records),
        "prompt_logs rows": repr(prompts),
        "usage export": exported + cli_out.decode() + cli_err.decode(),
    }
    sinks.update(live_files)
    files = [path for path in home.rglob("*") if path.is_file()]
    assert any(path.name == "tidegate.db" for path in files)
    for path in files:
        sinks[f"file {path.relative_to(home)}"] = path.read_bytes().decode("latin-1")

    leaks = [
        f"{what} in {sink}"
        for what, secret in canaries.items()
        for fragment in fragments(secret)
        for sink, text in sinks.items()
        if fragment in text
    ]
    assert leaks == []
    # The check itself can see: every completion request and the member key's id (not the
    # key) are in the access log.
    assert all(rid in sinks["access log"] for rid in request_ids)
    assert logged.key_id in sinks["access log"]


def prompt_rows(home: Path) -> list[str]:
    with sqlite3.connect(home / "tidegate.db") as db:
        return [prompt + "\n" + completion for prompt, completion in db.execute(
            "SELECT prompt, completion FROM prompt_logs")]  # fmt: skip
