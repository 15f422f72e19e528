"""The README's LoRA adapter walkthrough (``<!-- readme-test: lora -->``), run as written on
the fake upstream: its YAML block is the ``lora.yaml`` the console block starts from, with the
ports moved off 9000 and 8080."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_readme_examples import (
    ROOT,
    _env,
    _move_ports,
    assert_output_in_order,
    group,
    run_script,
)
from tests.support.gateway import free_port


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    work = tmp_path / "checkout"
    work.mkdir()
    (work / ".venv").symlink_to(ROOT / ".venv", target_is_directory=True)
    return work


def test_the_lora_adapters_walkthrough(checkout: Path, tmp_path: Path) -> None:
    blocks = group("lora")
    ports = {9000: free_port(), 8080: free_port()}
    (config,) = [b for b in blocks if b.lang == "yaml"]
    (checkout / "lora.yaml").write_text(_move_ports("\n".join(config.lines), ports) + "\n")
    consoles = [b for b in blocks if b.lang == "console"]
    commands = [_move_ports(c, ports) for b in consoles for c in b.commands()]
    env = _env(tmp_path / "home", TIDEGATE_SERVER__PORT=str(ports[8080]))
    output = run_script(commands, cwd=checkout, env=env, timeout_s=180)
    assert_output_in_order(output, [line for b in consoles for line in b.expected_output()])
