"""The metrics listener: a second port (``server.metrics_port``) that serves only ``GET /metrics``.

The series name tenants and count their requests, so on the API port /metrics needs a token;
this listener needs none and is meant to be bound where only the scraper reaches it (loopback,
or a pod port that the Service for clients does not expose). It runs on the gateway's own event
loop (aiohttp's server), so collectors read the routing state from the thread that owns it.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["MetricsListener"]


class MetricsListener:
    def __init__(self, *, registry: CollectorRegistry, host: str, port: int) -> None:
        """``port`` 0: any free port (``port`` tells which, once started)."""
        self._registry = registry
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}/metrics"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        try:
            await site.start()
        except OSError as error:
            await runner.cleanup()
            raise OSError(
                error.errno,
                f"cannot serve metrics on {self._host}:{self._port} (server.metrics_host and "
                f"server.metrics_port): {error.strerror}",
            ) from error
        self._runner = runner
        server = site._server  # the bound socket: the only way to learn the port 0 picked
        sockets = getattr(server, "sockets", None) or ()
        if sockets:
            self._port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        # In a worker thread: a large registry takes tens of ms to render, which on the loop is
        # a stall every request in flight would wait out at each scrape.
        body = await asyncio.to_thread(generate_latest, self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
