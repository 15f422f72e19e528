"""`tidegate keys` through Typer's CliRunner, on a real store in a temporary home."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from tidegate.commands.keys import keys_app
from tidegate.errors import AuthenticationError
from tidegate.store import create_engine, create_sessionmaker
from tidegate.tenancy.keys import KeyService, Principal


def invoke(home: Path, *args: str, store_url: str | None = None) -> Result:
    env = {
        "TIDEGATE_HOME": str(home),
        "TIDEGATE_STORE__URL": store_url,  # None: unset, the SQLite file in the home
        "TIDEGATE_CONFIG": None,
        "COLUMNS": "200",  # Rich tables wrap at the terminal width
    }
    return CliRunner().invoke(keys_app, list(args), env=env)


def revoked_column(listing: str, key_id: str) -> str:
    """The revoked cell of a key's row in `tidegate keys list` (second to last column)."""
    (row,) = [line for line in listing.splitlines() if key_id in line]
    return row.split()[-2]


def authenticate(store_url: str, plaintext: str) -> Principal:
    async def run() -> Principal:
        engine = create_engine(store_url)
        try:
            keys = KeyService(sessions=create_sessionmaker(engine), cache_ttl_s=0)
            return await keys.authenticate(plaintext)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_create_list_revoke(tmp_path: Path, store_url: str) -> None:
    created = invoke(tmp_path, "create", "--name", "ci runner", store_url=store_url)
    assert created.exit_code == 0, created.output
    plaintext = created.stdout.strip()
    assert plaintext.startswith("tg-") and "\n" not in plaintext
    assert "cannot show it again" in created.stderr
    principal = authenticate(store_url, plaintext)
    assert principal.name == "ci runner" and principal.role == "member"
    assert principal.key_id in created.stderr

    listed = invoke(tmp_path, "list", store_url=store_url)
    assert listed.exit_code == 0, listed.output
    assert principal.key_id in listed.stdout and "ci runner" in listed.stdout
    assert plaintext[:8] in listed.stdout and plaintext not in listed.stdout
    assert revoked_column(listed.stdout, principal.key_id) == "-"

    revoked = invoke(tmp_path, "revoke", principal.key_id, store_url=store_url)
    assert revoked.exit_code == 0, revoked.output
    assert f"Revoked {principal.key_id}" in revoked.stderr
    with pytest.raises(AuthenticationError, match="revoked"):
        authenticate(store_url, plaintext)
    listed_after = invoke(tmp_path, "list", store_url=store_url).stdout
    assert revoked_column(listed_after, principal.key_id) == datetime.now(UTC).date().isoformat()


def test_default_store_is_a_sqlite_file_in_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = invoke(home, "create", "--name", "ops", "--role", "admin", "--expires-days", "7")
    assert result.exit_code == 0, result.output
    database = home / "tidegate.db"
    assert database.is_file()
    principal = authenticate(f"sqlite+aiosqlite:///{database}", result.stdout.strip())
    assert principal.role == "admin"
    listed = invoke(home, "list").stdout
    assert "admin" in listed and "ops" in listed


def test_config_file_chooses_the_store(tmp_path: Path) -> None:
    database = tmp_path / "elsewhere" / "keys.db"
    config = tmp_path / "tidegate.yaml"
    config.write_text(f"store:\n  url: sqlite+aiosqlite:///{database}\n")
    result = invoke(tmp_path / "home", "create", "--name", "x", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert database.is_file()
    assert not (tmp_path / "home" / "tidegate.db").exists()


def test_empty_list_says_how_to_create(tmp_path: Path) -> None:
    result = invoke(tmp_path, "list")
    assert result.exit_code == 0, result.output
    assert "tidegate keys create" in result.stdout


def test_errors_are_one_line_and_exit_1(tmp_path: Path) -> None:
    unknown = invoke(tmp_path, "revoke", "key_nope")
    assert unknown.exit_code == 1
    assert "error: No API key with id 'key_nope'" in unknown.stderr
    assert "Traceback" not in unknown.output

    missing = invoke(tmp_path, "list", "--config", str(tmp_path / "absent.yaml"))
    assert missing.exit_code == 1
    assert "does not exist" in missing.stderr

    down = invoke(tmp_path, "list", store_url="postgresql+asyncpg://postgres@127.0.0.1:1/none")
    assert down.exit_code == 1
    assert "store is unavailable" in down.stderr


def test_invalid_options_are_usage_errors(tmp_path: Path) -> None:
    assert invoke(tmp_path, "create", "--name", "x", "--role", "root").exit_code == 2
    assert invoke(tmp_path, "create", "--name", "x", "--expires-days", "0").exit_code == 2
    assert invoke(tmp_path, "create").exit_code == 2
