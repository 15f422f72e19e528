"""Where a model's config.json comes from: a directory, a config.json file, or the hub.

A hub id is fetched with ``huggingface_hub.hf_hub_download`` (config.json only, a few KB); where
the hub cannot be reached the error says so and suggests a local directory instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tidegate.plan.errors import HubUnavailableError, ModelConfigError
from tidegate.plan.model_spec import ModelSpec, spec_from_config

CONFIG_NAME = "config.json"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelConfigError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelConfigError(f"{path} is not a JSON object")
    return data


def _download_config(repo_id: str, *, local_files_only: bool) -> Path:
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ModuleNotFoundError as exc:  # the `hub` extra
        raise HubUnavailableError(
            f"{repo_id} looks like a hub id, and reading it from the hub needs huggingface-hub: "
            "pip install 'tidegate[hub]' (or pass a local model directory holding config.json)"
        ) from exc
    try:
        return Path(
            hf_hub_download(
                repo_id=repo_id, filename=CONFIG_NAME, local_files_only=local_files_only
            )
        )
    except LocalEntryNotFoundError as exc:
        raise HubUnavailableError(
            f"cannot reach the Hugging Face hub to fetch {repo_id}/{CONFIG_NAME} "
            f"(and it is not in the local cache): {exc}. "
            "Pass a local model directory (one holding config.json) instead."
        ) from exc
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise HubUnavailableError(
            f"fetching {repo_id}/{CONFIG_NAME} from the hub failed: {exc}"
        ) from exc


def locate_config(model: str, *, local_files_only: bool = False) -> Path:
    """The config.json of `model`: a directory, a JSON file, or (else) a hub id.

    `local_files_only` answers hub ids from the local Hugging Face cache without a request.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        candidate = path / CONFIG_NAME
        if not candidate.is_file():
            raise ModelConfigError(f"{path} has no {CONFIG_NAME}")
        return candidate
    if path.is_file():
        return path
    if model.startswith(("/", "./", "../", "~")) or model.count("/") > 1:
        raise ModelConfigError(f"{model} does not exist")
    return _download_config(model, local_files_only=local_files_only)


def display_name(model: str, config_path: Path) -> str:
    """A short name: the directory's name, or the hub id's last part."""
    path = Path(model).expanduser()
    if path.is_file() and path.name != CONFIG_NAME:
        return path.stem  # a config saved under the model's name, e.g. llama-3.1-8b.json
    if path.exists():
        return (path if path.is_dir() else config_path.parent).name
    return model.rsplit("/", 1)[-1]


def load_model_spec(model: str, *, local_files_only: bool = False) -> ModelSpec:
    """Read and describe `model`. Raises ModelConfigError (HubUnavailableError for the hub)."""
    config_path = locate_config(model, local_files_only=local_files_only)
    return spec_from_config(_read_json(config_path), name=display_name(model, config_path))
