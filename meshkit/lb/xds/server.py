"""``XdsServer``: an Aggregated Discovery Service (xDS v3, state of the world) fed by
the registry.

One :class:`~meshkit.registry.Discovery` follows every service under the prefix
(a Range, then a watch from the next revision). Each ADS stream keeps, per resource
type, the names the client subscribed to and the version it last sent; after every
registry change (and every request) it recomputes the subscribed resources and sends
a response only when they differ from what the client already has. ACKs and NACKs
are told apart by ``error_detail``; a request whose nonce is not the latest one sent
for its type is stale and only updates nothing (the xDS protocol's rule).

Any listener name is served (a service may register after its clients start): a
service with no instances gets an empty ClusterLoadAssignment, so its calls fail
with UNAVAILABLE until an instance registers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2

from meshkit._internal.logging import get_logger
from meshkit.client import Client
from meshkit.lb.xds import resources as res
from meshkit.registry.discovery import Change, Discovery
from meshkit.registry.model import DEFAULT_PREFIX, Instance

__all__ = ["XdsServer"]

_log = get_logger("lb.xds")


@dataclass
class _Subscription:
    names: set[str] = field(default_factory=set)
    wildcard: bool = False
    sent_version: str = ""  # version of the last response sent
    nonce: str = ""  # nonce of the last response sent
    acked_version: str = ""
    nacks: int = 0
    dirty: bool = True  # names changed since the last response


@dataclass(eq=False)
class _Stream:
    node_id: str = ""
    zone: str = ""
    subs: dict[str, _Subscription] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class XdsServer:
    """``async with XdsServer(client, "127.0.0.1:18000") as x:`` serves ADS on ``x.address``.

    ``prefer_local``: when a client's bootstrap names its zone (``node.locality.zone``),
    localities of that zone get priority 0 and the others priority 1.
    """

    def __init__(self, client: Client, listen: str = "127.0.0.1:0", *,
                 prefix: str = DEFAULT_PREFIX, prefer_local: bool = True) -> None:
        self.client = client
        self.listen = listen
        self.prefix = prefix
        self.prefer_local = prefer_local
        self.port = 0
        self.responses_sent = 0
        self.nacks = 0
        self._discovery: Discovery | None = None
        self._server: grpc.aio.Server | None = None
        self._streams: set[_Stream] = set()
        self._nonces = itertools.count(1)
        self._closed = False

    @property
    def address(self) -> str:
        host = self.listen.rpartition(":")[0] or "127.0.0.1"
        return f"{host}:{self.port}"

    @property
    def streams(self) -> int:
        return len(self._streams)

    # ---- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> XdsServer:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def start(self) -> None:
        if self._server is not None:
            return
        self._discovery = Discovery(self.client, None, prefix=self.prefix)
        await self._discovery.start()
        self._discovery.add_listener(self._on_change)
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(_Servicer(self), server)
        self.port = server.add_insecure_port(self.listen)
        if self.port == 0:
            await self._discovery.close()
            raise OSError(f"cannot listen on {self.listen}")
        await server.start()
        self._server = server
        _log.info("xDS server listening on %s (prefix %s)", self.address, self.prefix)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            await self._server.stop(grace=0.5)
        if self._discovery is not None:
            await self._discovery.close()

    async def serve_forever(self) -> None:
        assert self._server is not None, "start() first"
        await self._server.wait_for_termination()

    # ---- resources ---------------------------------------------------------------------

    def _instances(self, service: str) -> list[Instance]:
        assert self._discovery is not None
        return self._discovery.instances(service)

    def _services(self) -> list[str]:
        assert self._discovery is not None
        return sorted({i.service for i in self._discovery.instances()})

    def build(self, type_url: str, names: Sequence[str], zone: str = "") -> list[any_pb2.Any]:
        """The resources of ``type_url`` for ``names`` as this server would send them."""
        out: list[any_pb2.Any] = []
        for name in sorted(set(names)):
            if type_url == res.LISTENER_TYPE:
                out.append(res.pack(res.listener(name)))
            elif type_url == res.ROUTE_TYPE:
                out.append(res.pack(res.route_config(name)))
            elif type_url == res.CLUSTER_TYPE:
                out.append(res.pack(res.cluster(name)))
            elif type_url == res.ENDPOINT_TYPE:
                out.append(res.pack(res.load_assignment(
                    name, self._instances(name), local_zone=zone, prefer_local=self.prefer_local)))
        return out

    def _on_change(self, change: Change) -> None:
        for s in self._streams:
            s.wake.set()

    # ---- one ADS stream ----------------------------------------------------------------

    def _on_request(self, st: _Stream, req: discovery_pb2.DiscoveryRequest) -> None:
        if req.node.id and not st.node_id:
            st.node_id = req.node.id
            st.zone = req.node.locality.zone
        if req.type_url not in res.TYPE_URLS:
            _log.warning("node %s asked for unknown type %s", st.node_id, req.type_url)
            return
        sub = st.subs.setdefault(req.type_url, _Subscription())
        if req.response_nonce and req.response_nonce != sub.nonce:
            return  # stale: answers a response that a newer one superseded
        if req.response_nonce:
            if req.HasField("error_detail"):
                sub.nacks += 1
                self.nacks += 1
                _log.warning("node %s rejected %s version %s: %s", st.node_id, req.type_url,
                             sub.sent_version, req.error_detail.message)
            else:
                sub.acked_version = req.version_info
        names = set(req.resource_names)
        wildcard = not names or "*" in names
        names.discard("*")
        if names != sub.names or wildcard != sub.wildcard:
            sub.names, sub.wildcard = names, wildcard
            sub.dirty = True
        elif not req.response_nonce:
            sub.dirty = True  # a first request (or a reconnect): always answer
        st.wake.set()

    def _pending(self, st: _Stream) -> list[discovery_pb2.DiscoveryResponse]:
        out = []
        for type_url, sub in st.subs.items():
            names = sorted(sub.names | (set(self._services()) if sub.wildcard else set()))
            resources = self.build(type_url, names, st.zone)
            digest = hashlib.sha256()
            for r in resources:
                digest.update(r.SerializeToString(deterministic=True))
            version = digest.hexdigest()[:16]
            if version == sub.sent_version and not sub.dirty:
                continue
            sub.dirty = False
            sub.sent_version = version
            sub.nonce = str(next(self._nonces))
            out.append(discovery_pb2.DiscoveryResponse(
                version_info=version, resources=resources, type_url=type_url, nonce=sub.nonce))
        return out

    async def handle(self, requests: AsyncIterator[discovery_pb2.DiscoveryRequest],
                     context: grpc.aio.ServicerContext) -> None:
        st = _Stream()
        self._streams.add(st)
        done = asyncio.Event()

        async def read() -> None:
            try:
                async for req in requests:
                    self._on_request(st, req)
            finally:
                done.set()
                st.wake.set()

        reader = asyncio.get_running_loop().create_task(read(), name="meshkit-xds-read")
        try:
            while not done.is_set():
                await st.wake.wait()
                st.wake.clear()
                for resp in self._pending(st):
                    await context.write(resp)
                    self.responses_sent += 1
        finally:
            self._streams.discard(st)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.RpcError):
                await reader
            _log.info("ADS stream of node %s ended", st.node_id or "?")


class _Servicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, owner: XdsServer) -> None:
        self._owner = owner

    async def StreamAggregatedResources(self, request_iterator, context):  # type: ignore[no-untyped-def,override]
        await self._owner.handle(request_iterator, context)

    async def DeltaAggregatedResources(self, request_iterator, context):  # type: ignore[no-untyped-def,override]
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            "meshkit's xDS server speaks state-of-the-world ADS only")
