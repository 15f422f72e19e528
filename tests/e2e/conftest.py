"""Engine fixtures for the end-to-end suite: the real vLLM engine with the bundled model.

The engine venv (~3.4 GB) and the prepared model live in the shared tidegate home (default
~/.cache/tidegate, or TIDEGATE_HOME) so they are built once, through the same Python API the
CLI uses. Each supervisor run gets a temporary home for its logs and state; its models directory
is a link to the shared one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from rich.console import Console

from tidegate.config import Config, EngineProfile, EnginesConfig, load_config
from tidegate.engines.install import EngineInstaller
from tidegate.engines.model_prepare import ModelPreparer
from tidegate.engines.shared_home import with_shared_engine
from tidegate.engines.supervisor import EngineSupervisor
from tidegate.observability.metrics import GatewayMetrics
from tidegate.routing.replicas import RoutingTable


@pytest.fixture(scope="session")
def shared_engine_config() -> Config:
    """Install the engine venv and prepare the bundled model (no-ops when already done)."""
    config = load_config()
    console = Console(stderr=True)
    EngineInstaller(config=config, console=console).install()
    ModelPreparer(config=config, console=console).prepare()
    return config


@pytest.fixture(scope="module")
def engine_config(shared_engine_config: Config, tmp_path_factory: pytest.TempPathFactory) -> Config:
    home: Path = tmp_path_factory.mktemp("tidegate-home")
    config = Config(
        engines=EnginesConfig(
            replicas=1,
            ready_timeout_s=240,
            health_interval_s=0.5,
            metrics_interval_s=1.0,
            restart_backoff_s=1.0,
            drain_grace_s=5.0,
            stop_timeout_s=15.0,
            profile=EngineProfile(
                device="cpu",
                enforce_eager=True,
                cpu_kvcache_space_gib=2,
                max_model_len=2048,
                max_num_seqs=16,
            ),
        ),
    )
    return with_shared_engine(config, home=home, shared=shared_engine_config)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def supervisor(engine_config: Config) -> AsyncIterator[EngineSupervisor]:
    """A supervisor with one started replica (not yet awaited ready)."""
    sup = EngineSupervisor(config=engine_config, routing=RoutingTable(), metrics=GatewayMetrics())
    await sup.start()
    try:
        yield sup
    finally:
        await sup.stop()
