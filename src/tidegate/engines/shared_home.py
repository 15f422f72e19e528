"""A tidegate home of its own that shares the engine venv and the prepared models.

The venv (~3.5 GB) and the prepared models are built once per machine; benchmarks, cold-start
measurements and tests that start extra replicas keep their logs and state in a fresh home and
reuse those.
"""

from __future__ import annotations

from pathlib import Path

from tidegate.config import Config


def with_shared_engine(config: Config, *, home: Path, shared: Config | None = None) -> Config:
    """``config`` moved to ``home``, with the engine venv and models of ``shared`` (default:
    ``config`` itself). Links ``home/models`` to the shared models directory."""
    shared = shared or config
    (home / "models").symlink_to(shared.models_dir, target_is_directory=True)
    engines = config.engines.model_copy(update={"venv": str(shared.engine_venv)})
    return config.model_copy(update={"home": home, "engines": engines})
