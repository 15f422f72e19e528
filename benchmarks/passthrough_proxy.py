"""The smallest useful pass-through proxy: the benchmark's yardstick for what any Python gateway
on this stack costs before it does anything.

Starlette on uvicorn (uvloop, httptools) with one shared aiohttp ClientSession, as in the
architecture notes' measured figures. It forwards method, path, body and content type; streams
SSE bodies through chunk by chunk and reads other bodies whole. No auth, no parsing.

    python -m benchmarks.passthrough_proxy --upstream http://127.0.0.1:8001 --port 8002
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

_FORWARDED = ("content-type", "authorization")


def build_app(upstream: str) -> Starlette:
    """``upstream`` is the origin (scheme://host:port); the request path is kept as is."""
    session: aiohttp.ClientSession | None = None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal session
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(upstream, connector=connector) as session:
            yield

    async def forward(request: Request) -> Response:
        assert session is not None
        headers = {k: v for k in _FORWARDED if (v := request.headers.get(k)) is not None}
        upstream_response = await session.request(
            request.method, request.url.path, data=await request.body(), headers=headers
        )
        content_type = upstream_response.headers.get("content-type", "")
        if content_type.startswith("text/event-stream"):
            return StreamingResponse(
                upstream_response.content.iter_any(),
                status_code=upstream_response.status,
                media_type=content_type,
                background=BackgroundTask(upstream_response.release),
            )
        body = await upstream_response.read()
        upstream_response.release()
        return Response(body, upstream_response.status, media_type=content_type or None)

    methods = ["GET", "POST"]
    return Starlette(routes=[Route("/{path:path}", forward, methods=methods)], lifespan=lifespan)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A minimal Starlette + aiohttp proxy.")
    parser.add_argument("--upstream", required=True, help="origin, e.g. http://127.0.0.1:8001")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.run(
        build_app(args.upstream),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
