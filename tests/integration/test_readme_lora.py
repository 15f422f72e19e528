"""The README's LoRA adapter walkthrough (``<!-- readme-test: lora -->``), run as written on
the fake upstream: its YAML block is the ``lora.yaml`` the console block starts from, with the
ports moved off 9000 and 8080."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_readme_examples import (
    ROOT,
    run_config_walkthrough,
)
from tests.support.gateway import free_port


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    work = tmp_path / "checkout"
    work.mkdir()
    (work / ".venv").symlink_to(ROOT / ".venv", target_is_directory=True)
    return work


def test_the_lora_adapters_walkthrough(checkout: Path, tmp_path: Path) -> None:
    ports = {9000: free_port(), 8080: free_port()}
    run_config_walkthrough("lora", "lora.yaml", ports, cwd=checkout, home=tmp_path / "home")
