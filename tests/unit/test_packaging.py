"""The package metadata builds without setuptools deprecation warnings."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_license_is_an_spdx_expression_with_its_file() -> None:
    # A TOML table here makes setuptools>=77 warn on every build (three times per `make setup`).
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    for name in project["project"]["license-files"]:
        assert "Apache License" in (ROOT / name).read_text()
    assert any(r.startswith("setuptools>=77") for r in project["build-system"]["requires"])
