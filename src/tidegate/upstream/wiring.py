"""The upstream side for the app's lifespan: one connection pool for every call the gateway
makes (requests, health checks, discovery probes, context lengths) and the providers that speak
each wire protocol over it."""

from __future__ import annotations

import contextlib

import aiohttp

from tidegate.config import Config, ProviderName
from tidegate.upstream.anthropic import AnthropicClient
from tidegate.upstream.client import Provider, UpstreamClient, UpstreamTimeouts


def open_session(config: Config, stack: contextlib.AsyncExitStack) -> aiohttp.ClientSession:
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=config.server.upstream_max_connections, keepalive_timeout=30
        ),
        skip_auto_headers=("User-Agent",),
    )
    stack.push_async_callback(session.close)
    return session


def build_providers(config: Config, session: aiohttp.ClientSession) -> dict[str, Provider]:
    """Provider by ``ProviderName`` (a replica's ``provider``)."""
    server = config.server
    timeouts = UpstreamTimeouts(
        connect_s=server.connect_timeout_s,
        total_s=server.request_timeout_s,
        idle_s=server.idle_timeout_s,
    )
    by_name: dict[ProviderName, Provider] = {
        "openai": UpstreamClient(session=session, timeouts=timeouts),
        "anthropic": AnthropicClient(session=session, timeouts=timeouts),
    }
    return {str(name): provider for name, provider in by_name.items()}
