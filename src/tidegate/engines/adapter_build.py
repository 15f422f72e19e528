"""`tidegate model prepare --adapter pirate`: a small LoRA adapter for the bundled model.

The bundled model ships without an adapter, so one is trained here (``lora_train.py`` run by the
engine venv's python, where torch and peft live): about a minute of CPU training on a generated
data set that makes every answer start with "Ahoy, matey!" and end with "Arr!". It is what the
tests and the README's LoRA example serve.

Like the model, the adapter is built in a temp directory and renamed into place with its marker
already inside; the marker records the base model's checksum and the trainer's, so a second run
is a no-op and a changed base or recipe retrains.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from tidegate.config import BUNDLED_MODEL, Config
from tidegate.engines import lora_train
from tidegate.engines.errors import EngineSetupError
from tidegate.engines.install import venv_python
from tidegate.engines.marker import marker_matches, read_json, write_json_atomic
from tidegate.engines.model_prepare import MARKER_NAME as MODEL_MARKER_NAME
from tidegate.engines.model_prepare import (
    ModelPreparer,
    bundled_name,
    prepared_dir,
    sha256_file,
)
from tidegate.engines.steps import StepRunner

MARKER_NAME = "tidegate-adapter.json"


@dataclass(frozen=True)
class AdapterRecipe:
    name: str
    rank: int
    epochs: int
    description: str


RECIPES = {
    "pirate": AdapterRecipe(
        name="pirate",
        rank=8,
        epochs=3,
        description='answers start with "Ahoy, matey!" and end with "Arr!"',
    ),
}
"""The adapters `tidegate model prepare --adapter NAME` can build."""

STYLE_PREFIX = lora_train.PREFIX
"""How every answer of the pirate adapter starts (the tests check it)."""


def prepare_with_adapters(
    *, config: Config, console: Console, model: str | None, adapters: Sequence[str]
) -> str:
    """`tidegate model prepare [--adapter NAME ...]`: the model, then each adapter for it;
    returns what vLLM gets as --model. The names are checked before any work."""
    model = model or config.engines.model
    check_recipes(adapters, model)
    resolved = ModelPreparer(config=config, console=console).prepare(model)
    builder = AdapterBuilder(config=config, console=console)
    for adapter in adapters:
        builder.build(adapter, model)
    return resolved


def check_recipes(adapters: Sequence[str], model: str) -> None:
    """Raise EngineSetupError unless every name in ``adapters`` can be built for ``model``."""
    for adapter in adapters:
        if adapter not in RECIPES:
            raise EngineSetupError(f"Unknown adapter {adapter!r}; known: {', '.join(RECIPES)}.")
    if adapters and model != BUNDLED_MODEL:
        # The recipes' data set, rank and epochs are sized for the 135M bundled model; on a
        # larger model CPU training would take hours.
        raise EngineSetupError(
            f"The demo adapters are built for the bundled model ({BUNDLED_MODEL}) only, not "
            f"{model!r}; train your own adapter with peft and list its directory under "
            "`adapters`."
        )


def adapter_dir(config: Config, adapter: str, model: str = BUNDLED_MODEL) -> Path:
    """Where ``adapter`` for the bundled ``model`` is built: the path an `adapters` entry
    names."""
    name = bundled_name(model) or model
    return config.models_dir / "adapters" / name / adapter


def is_built(directory: Path) -> bool:
    return (directory / MARKER_NAME).is_file() and (directory / "adapter_config.json").is_file()


class AdapterBuilder:
    def __init__(self, *, config: Config, console: Console) -> None:
        self.config = config
        self.console = console
        self.log_path = config.logs_dir / "adapter-build.log"

    def build(self, adapter: str, model: str | None = None) -> Path:
        """Train ``adapter`` for ``model`` (default: the configured one) unless an identical
        build is in place; returns its directory. Raises EngineSetupError."""
        model = model or self.config.engines.model
        check_recipes((adapter,), model)
        recipe = RECIPES[adapter]
        name = bundled_name(model) or model
        base = prepared_dir(self.config, name)
        base_marker = read_json(base / MODEL_MARKER_NAME)
        if base_marker is None:
            raise EngineSetupError(
                f"The bundled model is not prepared yet ({base} is missing). "
                "Run `tidegate model prepare` first."
            )
        target = adapter_dir(self.config, adapter, model)
        wanted = {
            "recipe": recipe.name,
            "rank": recipe.rank,
            "epochs": recipe.epochs,
            "base": str(base),
            "base_sha256": base_marker.get("sha256"),
            "trainer_sha256": sha256_file(Path(lora_train.__file__)),
        }
        if is_built(target) and marker_matches(target / MARKER_NAME, wanted):
            self.console.print(f"[green]✓[/green] adapter {adapter} already built in {target}")
            return target
        python = venv_python(self.config.engine_venv)
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{adapter}.", dir=target.parent))
        try:
            build = work / "adapter"
            info = work / "info.json"
            started = time.monotonic()
            StepRunner(console=self.console, log_path=self.log_path).run(
                f"train LoRA adapter {adapter} on {name} (peft on the CPU, one to three minutes)",
                [
                    str(python),
                    "-I",  # this package's profile.py must not shadow the stdlib's
                    lora_train.__file__,
                    str(base),
                    str(build),
                    str(info),
                    "--rank",
                    str(recipe.rank),
                    "--epochs",
                    str(recipe.epochs),
                ],
            )
            trained = read_json(info) or {}
            write_json_atomic(
                build / MARKER_NAME,
                {
                    **wanted,
                    "style": recipe.description,
                    "training": trained,
                    "build_seconds": round(time.monotonic() - started, 1),
                    "created_at": time.time(),
                },
            )
            if target.exists():
                target.rename(work / "old")
            build.rename(target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        self.console.print(
            f"[green]✓[/green] adapter {adapter} ({recipe.description}) built in {target}"
        )
        return target
