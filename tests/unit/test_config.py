from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tidegate.config import Config, load_config
from tidegate.config_docs import render


def test_env_overrides_yaml_and_yaml_overrides_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tidegate.yaml"
    path.write_text("server:\n  port: 7000\n  host: 0.0.0.0\nengines:\n  replicas: 2\n")
    monkeypatch.setenv("TIDEGATE_SERVER__PORT", "9001")
    config = load_config(path)
    assert config.server.port == 9001
    assert config.server.host == "0.0.0.0"
    assert config.engines.replicas == 2
    assert config.engines.profile.max_num_seqs == 64


def test_config_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("engines:\n  served_model_name: my-model\n")
    monkeypatch.setenv("TIDEGATE_CONFIG", str(path))
    assert load_config().engines.served_model_name == "my-model"


def test_unknown_keys_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("server:\n  prot: 1\n")
    with pytest.raises(ValidationError, match="prot"):
        load_config(path)


def test_secrets_are_masked_when_dumped() -> None:
    config = Config(
        admin_key="tg-secret-value-123456",
        upstreams=[{"url": "http://x/v1", "model": "m", "api_key": "sk-upstream-secret"}],
    )
    dumped = str(config.model_dump(mode="json"))
    assert "tg-secret-value" not in dumped and "sk-upstream-secret" not in dumped


def test_every_field_is_documented() -> None:
    reference = render()
    for line in reference.splitlines()[2:]:
        assert line.rstrip(" |").split("|")[-1].strip(), f"undocumented field: {line}"
    assert "TIDEGATE_SERVER__PORT" in reference
