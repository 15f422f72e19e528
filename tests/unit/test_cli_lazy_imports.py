"""The CLI starts without the server's stack: which modules `tidegate --help`, a group's
`--help` and `config show` import, checked in a fresh interpreter (no timing: the import graph is
what makes start-up slow, and it does not depend on how busy the machine is).

The lazy command table is checked against what it loads, so listing a command without importing
it cannot drift from the command itself.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest
import typer

from tidegate import cli
from tidegate.commands.lazy import load
from tidegate.commands.store_cli import SYSTEM_TENANT_ID
from tidegate.store.models import SYSTEM_TENANT_ID as STORE_SYSTEM_TENANT_ID

HEAVY = ("sqlalchemy", "alembic", "aiohttp", "uvicorn", "starlette", "numpy", "matplotlib")
"""Never needed to list commands or print the configuration."""
HEAVY_TIDEGATE = ("tidegate.app", "tidegate.store", "tidegate.pipeline", "tidegate_bench.runner")

_PROBE = """
import json, sys
from tidegate.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
else:
    code = 0
names = {name.split(".")[0] for name in sys.modules} | set(sys.modules)
print(json.dumps({"code": code, "loaded": sorted(names)}), file=sys.stderr)
"""


def imported_by(*args: str) -> tuple[int, set[str]]:
    """(exit code, modules loaded) of `tidegate ARGS` in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=120
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report["code"], set(report["loaded"])


def test_importing_the_cli_loads_no_heavy_module() -> None:
    probe = "import json, sys, tidegate.cli; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    loaded = set(json.loads(done.stdout))
    assert not loaded & {*HEAVY, "pydantic", "tidegate.config", "tidegate.commands.keys"}, loaded
    assert not {name for name in loaded if name.startswith(HEAVY_TIDEGATE)}


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["config", "show"],
        *([entry.name, "--help"] for entry in (*cli._Root.lazy_commands, *cli._Root.lazy_groups)),
    ],
    ids=" ".join,
)
def test_help_and_config_show_load_no_heavy_module(args: list[str]) -> None:
    code, loaded = imported_by(*args)
    assert code == 0
    assert not loaded & set(HEAVY)
    assert not {name for name in loaded if name.startswith(HEAVY_TIDEGATE)}
    if args == ["--help"]:  # listing the commands imports none of them
        assert not {name for name in loaded if name.startswith("tidegate.commands.")} - {
            "tidegate.commands.lazy"
        }


def test_running_a_command_loads_it_on_first_use() -> None:
    code, loaded = imported_by("keys", "list", "--help")
    assert code == 0
    assert "tidegate.commands.keys" in loaded and "tidegate.commands.batch" not in loaded


@pytest.mark.parametrize(
    "entry", [*cli._Root.lazy_commands, *cli._Root.lazy_groups], ids=lambda e: e.name
)
def test_each_lazy_entry_loads_the_command_it_lists(entry: object) -> None:
    from tidegate.commands.lazy import LazyCommand

    assert isinstance(entry, LazyCommand)
    command = load(entry)
    assert (command.name, command.help) == (entry.name, entry.help)
    # A Typer app loads as a group (`plan` is one, listed among the commands by its order).
    module, attr = entry.target.split(":")
    is_group = isinstance(getattr(importlib.import_module(module), attr), typer.Typer)
    assert is_group or entry not in cli._Root.lazy_groups
    assert isinstance(command, typer.core.TyperGroup) is is_group
    if is_group:
        assert list(command.commands)  # a group with its sub-commands


def test_the_root_lists_every_command_in_the_old_order() -> None:
    root = typer.main.get_command(cli.app)
    assert isinstance(root, typer.core.TyperGroup)
    assert list(root.commands) == [
        "plan", "up", "engine", "model", "keys", "tenants", "usage", "traffic", "adapters",
        "shadow", "rollout", "batch", "bench", "config",
    ]  # fmt: skip


def test_the_option_default_tenant_is_the_store_system_tenant() -> None:
    assert SYSTEM_TENANT_ID == STORE_SYSTEM_TENANT_ID
