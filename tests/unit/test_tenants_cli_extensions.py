"""`tidegate tenants create|update --extensions`: the operator's allow-list of engine extensions."""

from __future__ import annotations

from pathlib import Path

from tests.unit.test_tenants_cli import invoke
from tidegate.commands.tenants import tenants_app


def test_the_operator_allows_and_resets_extensions(tmp_path: Path, store_url: str) -> None:
    created = invoke(
        tenants_app, tmp_path, store_url, "create", "vision", "--extensions", "remote_media_urls"
    )
    assert created.exit_code == 0, created.output
    tenant_id = created.stdout.strip()
    assert "allowed_extensions=remote_media_urls" in created.stderr
    updated = invoke(
        tenants_app,
        tmp_path,
        store_url,
        "update",
        tenant_id,
        "--extensions",
        "remote_media_urls, chat_template_kwargs",
    )
    assert updated.exit_code == 0, updated.output
    assert "allowed_extensions=remote_media_urls,chat_template_kwargs" in updated.stderr
    reset = invoke(tenants_app, tmp_path, store_url, "update", tenant_id, "--extensions", "")
    assert reset.exit_code == 0, reset.output
    assert "allowed_extensions" not in reset.stderr
    unknown = invoke(
        tenants_app, tmp_path, store_url, "update", tenant_id, "--extensions", "priority"
    )
    assert unknown.exit_code == 1
    assert "settings.allowed_extensions.0" in unknown.stderr
