"""What ``tidegate up`` tells the console: where its state lives, the admin key, and shutdown.

Everything here goes to stderr; stdout carries only the JSON access log.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from rich.console import Console
from sqlalchemy.engine import make_url
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidegate.config import Config

START_CLEAN = (
    "TIDEGATE_HOME=$PWD/.tidegate TIDEGATE_ENGINES__VENV=~/.cache/tidegate/engine-venv make run"
)


def store_label(config: Config) -> str:
    """The store URL without its password."""
    return make_url(config.store_url).render_as_string(hide_password=True)


def store_is_new(config: Config) -> bool | None:
    """True when the SQLite file does not exist yet; None for a server database (unknown)."""
    url = make_url(config.store_url)
    if not url.drivername.startswith("sqlite") or not url.database:
        return None
    return not Path(url.database).exists()


def where_lines(config: Config) -> list[str]:
    """Which home, store and engine venv this start uses: the first thing ``up`` prints."""
    new = store_is_new(config)
    state = {True: " (new)", False: " (existing)", None: ""}[new]
    lines = [
        f"home: {config.home} (TIDEGATE_HOME; logs in {config.logs_dir})",
        f"store: {store_label(config)}{state}",
    ]
    if config.engines.replicas > 0:
        lines.append(f"engine venv: {config.engine_venv}; models: {config.models_dir}")
    return lines


def existing_key_message(config: Config) -> str:
    return (
        f"This store ({store_label(config)}) already has an admin key: it was printed once, when "
        "the store was created, and is kept (only its hash is stored, so it cannot be shown "
        "again). If it is not yours (another checkout or an earlier run used this home), start "
        f"with a store of your own: `{START_CLEAN}`. Otherwise, on this machine, "
        "`.venv/bin/tidegate keys create --name admin2 --role admin` makes another."
    )


class ConsoleServer(uvicorn.Server):
    """uvicorn's server, saying on the console that a signal starts a graceful shutdown."""

    def __init__(self, config: uvicorn.Config, *, console: Console, grace_s: float) -> None:
        super().__init__(config)
        self._console = console
        self._grace_s = grace_s
        self._told = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self._told:
            self._told = True
            self._console.print(
                "shutting down: no new connections; finishing the requests in flight (up to "
                f"{self._grace_s:.0f} s; press Ctrl-C again to stop at once)"
            )
        super().handle_exit(sig, frame)


class ShutdownAnnouncer:
    """Wraps the app's ASGI lifespan to print when the shutdown work starts and ends (draining
    and stopping replicas, flushing usage: seconds during which the console was silent)."""

    def __init__(self, app: ASGIApp, *, console: Console, replicas: int) -> None:
        self.app = app
        self._console = console
        self._replicas = replicas

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        started: list[float] = []

        async def watched_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                started.append(time.monotonic())
                what = "flushing usage"
                if self._replicas:
                    plural = "s" if self._replicas != 1 else ""
                    what = f"draining and stopping {self._replicas} replica{plural}, {what}"
                self._console.print(f"stopping: {what} …")
            return message

        async def watched_send(message: Message) -> None:
            await send(message)
            if message["type"] == "lifespan.shutdown.complete" and started:
                self._console.print(f"tidegate stopped ({time.monotonic() - started[0]:.1f} s)")

        await self.app(scope, watched_receive, watched_send)


def run_server(app: Any, *, config: Config, console: Console, **uvicorn_args: Any) -> None:
    grace = config.engines.drain_grace_s
    wrapped = ShutdownAnnouncer(app, console=console, replicas=config.engines.replicas)
    server_config = uvicorn.Config(
        wrapped, timeout_graceful_shutdown=int(grace), lifespan="on", **uvicorn_args
    )
    ConsoleServer(server_config, console=console, grace_s=grace).run()
