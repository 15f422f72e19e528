"""DNS discovery: an upstream entry with ``discovery: dns`` names a host (a Kubernetes headless
Service) whose A/AAAA records are the replicas.

Every ``discovery_interval_s`` the host is resolved again. A new address becomes a ``READY``
replica once its health path answers; an address that went away is set ``DRAINING`` (the
balancer stops picking it) and leaves the pool when its last in-flight request is done. A failed
lookup changes nothing, so a DNS hiccup never empties a pool; a name with no addresses (a
headless Service with no ready pod) drains them all. Replica ids are ``u<index>-<address>`` and
at most ``discovery_max_replicas`` per entry exist, so they stay bounded as metric labels.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from tidegate.background import BackgroundTask
from tidegate.config import UpstreamServer
from tidegate.observability.metrics import GatewayMetrics
from tidegate.routing.metrics import export_replica_state, forget_replica_state
from tidegate.routing.replicas import Replica, ReplicaState, RoutingTable

log = logging.getLogger(__name__)

Resolver = Callable[[str], Awaitable[Sequence[str]]]
"""Host name → its addresses. Raises OSError when the lookup failed (as opposed to: no records)."""

# "No such name" and "no records" mean: nothing serves now. Anything else is a failed lookup.
_NO_ADDRESS = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}


async def resolve_host(host: str) -> list[str]:
    """All A and AAAA addresses of ``host`` through the system resolver, deduplicated."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        if error.errno in _NO_ADDRESS:
            return []
        raise
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True, kw_only=True)
class DnsTarget:
    """One ``discovery: dns`` upstream entry, taken apart once."""

    index: int
    model: str
    pool: str
    upstream_model: str
    api_key: str | None
    scheme: str
    host: str
    port: int
    path: str
    interval_s: float
    max_replicas: int
    health_path: str
    max_concurrency: int

    @classmethod
    def from_config(cls, index: int, upstream: UpstreamServer) -> DnsTarget:
        url = urlsplit(upstream.url.rstrip("/"))
        if not url.hostname:
            raise ValueError(f"upstream {index}: discovery dns needs a host in {upstream.url!r}")
        return cls(
            index=index,
            model=upstream.model,
            pool=upstream.pool or upstream.model,
            upstream_model=upstream.upstream_model or upstream.model,
            api_key=upstream.resolved_api_key(),
            scheme=url.scheme or "http",
            host=url.hostname,
            port=url.port or (443 if url.scheme == "https" else 80),
            path=url.path,
            interval_s=upstream.discovery_interval_s,
            max_replicas=upstream.discovery_max_replicas,
            health_path=upstream.discovery_health_path,
            max_concurrency=upstream.max_concurrency,
        )

    def root_url(self, address: str) -> str:
        host = f"[{address}]" if ":" in address else address
        return f"{self.scheme}://{host}:{self.port}"


class DnsDiscovery:
    """Keeps the replicas of one DNS-discovered upstream in step with its DNS records."""

    def __init__(
        self,
        *,
        target: DnsTarget,
        routing: RoutingTable,
        resolver: Resolver = resolve_host,
        session: aiohttp.ClientSession | None = None,
        metrics: GatewayMetrics | None = None,
        probe_timeout_s: float = 2.0,
    ) -> None:
        """``session``: for the health probe; None: new addresses are ready at once."""
        self.target = target
        self._routing = routing
        self._resolver = resolver
        self._session = session
        self._metrics = metrics
        self._probe_timeout = aiohttp.ClientTimeout(total=probe_timeout_s)
        self._replicas: dict[str, Replica] = {}
        self._task = BackgroundTask(f"dns-discovery-{target.host}", self._run)
        routing.ensure_pool(target.pool, model=target.model)

    @property
    def replicas(self) -> dict[str, Replica]:
        """Address → replica, draining ones included."""
        return dict(self._replicas)

    async def start(self) -> None:
        """One resolution now (the gateway starts with what DNS says), then periodically."""
        await self._refresh_logged()
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def refresh(self) -> None:
        """One round: resolve, add new addresses, drain gone ones, remove drained idle ones."""
        try:
            found = list(dict.fromkeys(await self._resolver(self.target.host)))
        except OSError as error:
            log.warning("resolving %s failed (%s); keeping its replicas", self.target.host, error)
            self._reap()
            return
        wanted = self._cap(found)
        for address, replica in self._replicas.items():
            if address in wanted:
                if replica.state is ReplicaState.DRAINING:
                    self._set_state(replica, ReplicaState.READY)  # it came back
            elif replica.state is not ReplicaState.DRAINING:
                self._set_state(replica, ReplicaState.DRAINING)
        new = [address for address in wanted if address not in self._replicas]
        healthy = await asyncio.gather(*(self._probe(address) for address in new))
        for address, ok in zip(new, healthy, strict=True):
            if ok:
                self._add(address)
        self._reap()

    def _cap(self, found: list[str]) -> set[str]:
        # Known addresses first, so a large answer does not churn the replicas already serving.
        ordered = [a for a in found if a in self._replicas] + [
            a for a in found if a not in self._replicas
        ]
        if len(ordered) > self.target.max_replicas:
            log.warning(
                "%s has %d addresses; using %d (discovery_max_replicas)",
                self.target.host,
                len(ordered),
                self.target.max_replicas,
            )
        return set(ordered[: self.target.max_replicas])

    async def _probe(self, address: str) -> bool:
        if self._session is None or not self.target.health_path:
            return True
        url = self.target.root_url(address) + self.target.health_path
        try:
            async with self._session.get(url, timeout=self._probe_timeout) as response:
                return 200 <= response.status < 300
        except (aiohttp.ClientError, TimeoutError):
            return False

    def _add(self, address: str) -> None:
        target = self.target
        replica = Replica(
            id=f"u{target.index}-{address}",
            model=target.model,
            pool=target.pool,
            base_url=target.root_url(address) + target.path,
            upstream_model=target.upstream_model,
            api_key=target.api_key,
            max_concurrency=target.max_concurrency,
        )
        self._replicas[address] = replica
        self._routing.add(replica)
        self._set_state(replica, ReplicaState.READY)

    def _reap(self) -> None:
        for address, replica in list(self._replicas.items()):
            if replica.state is ReplicaState.DRAINING and replica.outstanding <= 0:
                del self._replicas[address]
                self._routing.remove(replica)
                self._forget_metrics(replica)

    def _set_state(self, replica: Replica, state: ReplicaState) -> None:
        replica.set_state(state)
        if self._metrics is not None:
            export_replica_state(self._metrics, replica)

    def _forget_metrics(self, replica: Replica) -> None:
        if self._metrics is not None:
            forget_replica_state(self._metrics, replica)

    async def _refresh_logged(self) -> None:
        try:
            await self.refresh()
        except Exception:  # the loop must outlive any one bad round
            log.exception("DNS discovery of %s failed", self.target.host)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.target.interval_s)
            await self._refresh_logged()


def dns_discoveries(
    upstreams: Sequence[UpstreamServer],
    *,
    routing: RoutingTable,
    session: aiohttp.ClientSession,
    metrics: GatewayMetrics | None = None,
    resolver: Resolver = resolve_host,
) -> list[DnsDiscovery]:
    """One discovery per ``discovery: dns`` entry of the upstream list (index = its position)."""
    return [
        DnsDiscovery(
            target=DnsTarget.from_config(index, upstream),
            routing=routing,
            resolver=resolver,
            session=session,
            metrics=metrics,
        )
        for index, upstream in enumerate(upstreams)
        if upstream.discovery == "dns"
    ]
