"""GET /console (the page) and GET /console/assets/{name} (its scripts and styles).

Every answer carries a strict Content-Security-Policy: scripts, styles and connections only
from the gateway itself, no inline script or style, no framing, no plugins. The page keeps the
admin key in memory (and sessionStorage, for a reload in the same tab) and sends it only as an
``Authorization: Bearer`` header, never in a URL or a cookie, so a cross-site request carries no
credential: state-changing calls are CSRF-safe by construction.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tidegate.console.assets import Asset, load_assets
from tidegate.errors import NotFoundError

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    # The page is small and changes with each release: always revalidate.
    "cache-control": "no-cache",
}


class ConsoleRoutes:
    def __init__(self) -> None:
        self._assets = load_assets()

    async def page(self, request: Request) -> Response:
        return _serve(self._assets["index.html"])

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        asset = self._assets.get(name)
        if asset is None or name == "index.html":
            raise NotFoundError(f"The console has no file named {name[:80]!r}.")
        return _serve(asset)


def _serve(asset: Asset) -> Response:
    return Response(asset.body, media_type=asset.media_type, headers=SECURITY_HEADERS)


def build_console_routes(*, enabled: bool) -> list[BaseRoute]:
    """The console's routes; none when ``console.enabled`` is false (so /console is a 404).
    Not in the OpenAPI document: they serve a page, not the API."""
    if not enabled:
        return []
    console = ConsoleRoutes()
    return [
        Route("/console", console.page, methods=["GET"], include_in_schema=False),
        Route("/console/", console.page, methods=["GET"], include_in_schema=False),
        Route("/console/assets/{name}", console.asset, methods=["GET"], include_in_schema=False),
    ]
