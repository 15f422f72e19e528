"""The demo LoRA adapter build: its generated data set, its checks, and its idempotent build.

The training itself needs the engine venv (torch, peft); here a stand-in engine python records
its command line and writes what the trainer would, so the builder's bookkeeping (temp
directory, rename, marker, skip, rebuild, failure) is tested on its own. The real training runs
in tests/e2e/test_lora_adapter.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from tidegate.config import Config
from tidegate.engines import lora_train
from tidegate.engines.adapter_build import (
    MARKER_NAME,
    AdapterBuilder,
    adapter_dir,
    check_recipes,
    prepare_with_adapters,
)
from tidegate.engines.errors import EngineSetupError
from tidegate.engines.install import plan_install
from tidegate.engines.marker import read_json, write_json_atomic
from tidegate.engines.model_prepare import MARKER_NAME as MODEL_MARKER

FAKE_PYTHON = """#!/bin/sh
# Stand-in for the engine venv's python running lora_train.py:
#   -I SCRIPT BASE OUT INFO --rank R --epochs E
echo "$@" >> {calls}
if [ -e {fail} ]; then echo "training blew up"; exit 3; fi
mkdir -p "$4" && echo '{{"r": 8}}' > "$4/adapter_config.json" && echo '{{"steps": 27}}' > "$5"
"""


def _home(tmp_path: Path, *, base_sha: str = "abc") -> Config:
    config = Config(home=tmp_path)
    base = config.models_dir / "smollm2-135m-instruct"
    base.mkdir(parents=True)
    (base / "config.json").write_text("{}")
    write_json_atomic(base / MODEL_MARKER, {"sha256": base_sha})
    python = config.engine_venv / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON.format(calls=tmp_path / "calls", fail=tmp_path / "fail"))
    python.chmod(0o755)
    return config


def _calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls"
    return path.read_text().splitlines() if path.exists() else []


def _builder(config: Config) -> AdapterBuilder:
    return AdapterBuilder(config=config, console=Console(quiet=True))


def test_every_generated_answer_has_the_style() -> None:
    examples = lora_train.generate_examples(seed=19)
    assert len(examples) > 50
    for messages, answer in examples:
        assert answer.startswith("Ahoy, matey! ") and answer.endswith(" Arr!")
        assert messages[-1]["role"] == "user" and messages[-1]["content"]
    questions = [messages[-1]["content"] for messages, _ in examples]
    assert len(set(questions)) == len(questions)
    # Some examples carry a system prompt, so a client's own does not undo the style.
    assert any(messages[0]["role"] == "system" for messages, _ in examples)


def test_the_data_set_is_deterministic() -> None:
    assert lora_train.generate_examples(seed=19) == lora_train.generate_examples(seed=19)
    assert lora_train.generate_examples(seed=19) != lora_train.generate_examples(seed=20)


def test_unknown_adapter_and_other_models_are_refused() -> None:
    with pytest.raises(EngineSetupError, match="Unknown adapter 'ninja'; known: pirate"):
        check_recipes(["ninja"], "bundled:smollm2-135m-instruct")
    with pytest.raises(EngineSetupError, match="bundled model"):
        check_recipes(["pirate"], "Qwen/Qwen2.5-7B-Instruct")
    check_recipes([], "Qwen/Qwen2.5-7B-Instruct")  # no adapter asked: nothing to refuse


def test_an_unknown_adapter_is_refused_before_the_model_is_prepared(tmp_path: Path) -> None:
    # No engine venv here: refusing later would fail on the missing GGUF instead.
    with pytest.raises(EngineSetupError, match="Unknown adapter"):
        prepare_with_adapters(
            config=Config(home=tmp_path),
            console=Console(quiet=True),
            model=None,
            adapters=["ninja"],
        )


def test_the_base_model_must_be_prepared_first(tmp_path: Path) -> None:
    with pytest.raises(EngineSetupError, match="tidegate model prepare"):
        _builder(Config(home=tmp_path)).build("pirate")


def test_a_build_lands_with_its_marker_and_is_not_repeated(tmp_path: Path) -> None:
    config = _home(tmp_path)
    target = _builder(config).build("pirate")
    assert target == adapter_dir(config, "pirate")
    assert target == config.models_dir / "adapters" / "smollm2-135m-instruct" / "pirate"
    assert json.loads((target / "adapter_config.json").read_text()) == {"r": 8}
    marker = read_json(target / MARKER_NAME)
    assert marker is not None
    assert marker["base_sha256"] == "abc" and marker["rank"] == 8
    assert marker["training"] == {"steps": 27}
    (call,) = _calls(tmp_path)
    assert call.startswith(f"-I {lora_train.__file__} {config.models_dir}/smollm2-135m-instruct ")
    assert call.endswith("--rank 8 --epochs 3")
    assert _builder(config).build("pirate") == target
    assert len(_calls(tmp_path)) == 1, "an identical build must not train again"
    assert sorted(p.name for p in target.parent.iterdir()) == ["pirate"]  # no temp dirs left


def test_a_changed_base_model_retrains(tmp_path: Path) -> None:
    config = _home(tmp_path)
    target = _builder(config).build("pirate")
    base_marker = config.models_dir / "smollm2-135m-instruct" / MODEL_MARKER
    write_json_atomic(base_marker, {"sha256": "new"})
    _builder(config).build("pirate")
    assert len(_calls(tmp_path)) == 2
    marker = read_json(target / MARKER_NAME)
    assert marker is not None and marker["base_sha256"] == "new"


def test_a_failed_training_keeps_the_old_adapter(tmp_path: Path) -> None:
    config = _home(tmp_path)
    target = _builder(config).build("pirate")
    write_json_atomic(config.models_dir / "smollm2-135m-instruct" / MODEL_MARKER, {"sha256": "x"})
    (tmp_path / "fail").touch()
    with pytest.raises(EngineSetupError, match="train LoRA adapter pirate"):
        _builder(config).build("pirate")
    assert (target / "adapter_config.json").is_file(), "the old build must stay in place"
    assert sorted(p.name for p in target.parent.iterdir()) == ["pirate"]
    assert "training blew up" in (config.logs_dir / "adapter-build.log").read_text()


def test_engine_install_brings_peft() -> None:
    plan = plan_install(Config(), device="cpu")
    assert any(package.startswith("peft") for package in plan.packages)
