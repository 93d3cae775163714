"""An in-process meshkit member: the driver plus its gRPC and HTTP front doors.

``async with EmbeddedServer(settings, listen=[("127.0.0.1", port)]) as srv:``
starts a member and serves, as etcd does, etcd's v3 gRPC API *and* its HTTP/1.1
endpoints (``/health``, ``/version``, ``/metrics``, more routes if given) on the
given client addresses; leaving the block stops serving, then stops the member.
Tests use it directly; ``meshkit server`` uses it through :mod:`meshkit.server.run`.

A member removed from the cluster stops by itself, as etcd's server does: it stops
serving its client (and metrics) ports, then stops the member; ``stopped`` (etcd's
``StopNotify()``) tells the embedder, ``stop_error`` why. ``close()`` afterwards
is a no-op, and may be called any number of times.

Layout: the grpc.aio server listens on internal addresses only (unix sockets in a
private temporary directory) and :class:`~meshkit.server.clientport.ClientMux`
owns the client ports, forwarding gRPC connections and handing HTTP/1.1 ones to
aiohttp. With ``client_http_listen`` (etcd 3.5's ``--listen-client-http-urls``)
the client ports are grpc's own (gRPC only) and HTTP is served on those URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meshkit.api.etcdserverpb import rpc_pb2_grpc
from meshkit.server.api.auth import AuthService
from meshkit.server.api.election import add_election_service
from meshkit.server.api.gateway import add_gateway_routes
from meshkit.server.api.http import HttpEndpoints, RouteAdder, make_client_app, make_metrics_app
from meshkit.server.api.kv import KVService
from meshkit.server.api.lease import LeaseService
from meshkit.server.api.lock import add_lock_service
from meshkit.server.api.maintenance import ClusterService, MaintenanceService
from meshkit.server.api.watch import add_watch_service
from meshkit.server.clientport import ClientMux, GrpcTarget, ListenError, internal_socket_path
from meshkit.server.etcdserver.server import EtcdServer, MemberRemovedError, ServerSettings
from meshkit.server.h2grpc import GrpcServer
from meshkit.server.h2grpc.keepalive import KeepalivePolicy
from meshkit.server.tls import TLSInfo
from meshkit.server.transport import Transport

log = logging.getLogger("meshkit.server")

# etcd lets gRPC requests exceed --max-request-bytes by this much on the wire so
# that the size check inside the server, with etcd's own error, is what answers.
GRPC_OVERHEAD_BYTES = 512 * 1024
MAX_SEND_BYTES = 2**31 - 1


__all__ = ["CLIENT_HTTP_ROUTES", "EmbeddedServer", "HealthService", "ListenError", "grpc_options"]

# Extra HTTP routes of the client URLs, each called as add(app, etcd_server):
# etcd's grpc-gateway JSON API (/v3/...).
CLIENT_HTTP_ROUTES: tuple[RouteAdder, ...] = (add_gateway_routes,)


def grpc_options(max_request_bytes: int, keepalive_min_time_ms: int = 5000,
                 keepalive_interval_ms: int = 2 * 3600 * 1000,
                 keepalive_timeout_ms: int = 20_000) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_request_bytes + GRPC_OVERHEAD_BYTES),
        ("grpc.max_send_message_length", MAX_SEND_BYTES),
        # etcd accepts client pings every 5 s, with or without active streams;
        # grpcio's defaults would answer such clients with GOAWAY too_many_pings.
        ("grpc.http2.min_ping_interval_without_data_ms", keepalive_min_time_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.keepalive_time_ms", keepalive_interval_ms),
        ("grpc.keepalive_timeout_ms", keepalive_timeout_ms),
        # grpc-core cancels calls beyond 1000 not yet picked up by the (single
        # threaded) Python server; a burst of clients must queue, not fail.
        ("grpc.server.max_pending_requests", 100_000),
        ("grpc.server.max_pending_requests_hard_limit", 100_000),
        # Two servers must never share a port silently.
        ("grpc.so_reuseport", 0),
    ]


class _GenericOnly:
    """Lets the generated ``add_*Servicer_to_server`` register generic handlers only.

    grpc.aio (1.85) keeps one pending future per *registered* method and waits on
    all of them for every incoming call: with ~25 etcd methods that cost ~35 us of
    CPU per RPC here. Generic handlers are found by one dict lookup instead.
    """

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Any) -> None:
        pass  # the same handlers arrive through add_generic_rpc_handlers


class HealthService(health_pb2_grpc.HealthServicer):
    """grpc.health.v1 as etcd 3.4 registers it: the server ("") is SERVING.

    Check of a service never set answers NOT_FOUND "unknown service"; Watch of
    one answers SERVICE_UNKNOWN and waits (grpc-go's health server, which etcd
    uses). On shutdown every status turns NOT_SERVING for the watchers.
    """

    def __init__(self) -> None:
        self._status: dict[str, int] = {"": health_pb2.HealthCheckResponse.SERVING}
        self._changed = asyncio.Event()
        self._shutting_down = False

    def set(self, service: str, status: int) -> None:
        if self._shutting_down:
            return
        self._set(service, status)

    def _set(self, service: str, status: int) -> None:
        self._status[service] = status
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def shutdown(self) -> None:
        """Every service NOT_SERVING from now on (grpc-go's ``Shutdown``)."""
        for service in list(self._status):
            self._set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        self._shutting_down = True

    async def Check(self, request: health_pb2.HealthCheckRequest,
                    context: grpc.aio.ServicerContext) -> health_pb2.HealthCheckResponse:
        if request.service not in self._status:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return health_pb2.HealthCheckResponse(status=self._status[request.service])  # type: ignore[arg-type]

    async def List(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        # newer than etcd 3.4's grpc-go: answered as it answers an unknown method
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            "unknown method List for service grpc.health.v1.Health")

    async def Watch(self, request: health_pb2.HealthCheckRequest,
                    context: grpc.aio.ServicerContext) -> None:
        last = None
        while True:
            changed = self._changed
            status = self._status.get(request.service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
            if status != last:
                await context.write(health_pb2.HealthCheckResponse(status=status))  # type: ignore[arg-type]
                last = status
            await changed.wait()


class EmbeddedServer:
    def __init__(self, settings: ServerSettings, listen: Sequence[tuple[str, int]],
                 *, grpc_extra_options: Sequence[tuple[str, Any]] = (),
                 transport: Transport | None = None,
                 listen_tls: Sequence[tuple[str, int]] = (), tls: TLSInfo | None = None,
                 metrics_listen: Sequence[tuple[str, int]] = (), metrics_tls: bool = False,
                 client_http_listen: Sequence[tuple[str, int]] = (),
                 client_http_listen_tls: Sequence[tuple[str, int]] = (),
                 client_http_routes: Sequence[RouteAdder] | None = None) -> None:
        self.settings = settings
        # http client URLs: gRPC and HTTP/1.1 (unless client_http_listen is given)
        self.listen = list(listen)
        # https client URLs, served with ``tls`` (etcd's --cert-file, --key-file, ...)
        self.listen_tls = list(listen_tls)
        self.tls = tls
        # --listen-metrics-urls: /metrics and /health over HTTP/1.1
        self.metrics_listen = list(metrics_listen)
        self.metrics_tls = metrics_tls
        # --listen-client-http-urls (etcd 3.5): HTTP only there, gRPC only on ``listen``
        self.client_http_listen = list(client_http_listen)
        self.client_http_listen_tls = list(client_http_listen_tls)
        self.client_http_routes = list(CLIENT_HTTP_ROUTES if client_http_routes is None
                                       else client_http_routes)
        self.http: HttpEndpoints | None = None  # the metrics listener
        self.client_http: HttpEndpoints | None = None
        self.metrics_ports: list[int] = []
        self.client_http_ports: list[int] = []
        self.etcd = EtcdServer(settings, transport=transport)
        self.health = HealthService()
        # gRPC in the event loop (h2grpc), or grpcio's server behind the mux
        # (MESHKIT_GRPC_SERVER=grpcio: kept to compare the two).
        self.native_grpc = os.environ.get("MESHKIT_GRPC_SERVER", "native") != "grpcio"
        self._grpc: grpc.aio.Server | GrpcServer | None = None
        self._grpc_options = [
            *grpc_options(
                settings.max_request_bytes,
                keepalive_min_time_ms=settings.grpc_keepalive_min_time_ms,
                keepalive_interval_ms=settings.grpc_keepalive_interval_ms,
                keepalive_timeout_ms=settings.grpc_keepalive_timeout_ms,
            ),
            *grpc_extra_options,
        ]
        self._muxes: list[ClientMux] = []
        self._private_dir: str | None = None
        # where the grpc server listens when the mux owns the client ports
        self.grpc_internal: list[str] = []
        # client-facing ports, in the order of [*listen, *listen_tls]
        self.ports: list[int] = []
        # Set once the member stopped serving: closed, or removed from the cluster
        # (etcd's EtcdServer.StopNotify()); ``stop_error`` is set in the latter case.
        self.stopped = asyncio.Event()
        self.stop_error: MemberRemovedError | None = None
        self._watch_removed: asyncio.Task[None] | None = None
        self._stop_lock = asyncio.Lock()
        self._shut = False

    @classmethod
    def for_test(cls, data_dir: Path, port: int, name: str = "default", **overrides: Any) -> EmbeddedServer:
        peer = f"http://127.0.0.1:{port + 1}" if port else "http://localhost:2380"
        client = f"http://127.0.0.1:{port}"
        settings = ServerSettings(
            name=name, data_dir=data_dir, wal_dir=None,
            initial_cluster=((name, peer),), initial_cluster_token="etcd-cluster",
            advertise_peer_urls=(peer,), advertise_client_urls=(client,),
        )
        for k, v in overrides.items():
            setattr(settings, k, v)
        return cls(settings, [("127.0.0.1", port)])

    @property
    def muxed(self) -> bool:
        """Whether the client ports serve HTTP too (no --listen-client-http-urls)."""
        return not (self.client_http_listen or self.client_http_listen_tls)

    async def __aenter__(self) -> EmbeddedServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        await self.etcd.start()
        try:
            await self._start_serving()
        except BaseException:
            await self._stop_serving(0)
            await self.etcd.close()
            raise
        self._watch_removed = asyncio.get_running_loop().create_task(
            self._stop_when_removed(), name=f"stop-when-removed-{self.settings.name}")
        log.info("serving client requests on %s (%s)",
                 ", ".join(f"{h}:{p}" for (h, _), p in zip([*self.listen, *self.listen_tls], self.ports, strict=True)),
                 ("gRPC and HTTP" if self.muxed else "gRPC")
                 + (f"; grpcio server on {', '.join(self.grpc_internal)}" if self.grpc_internal else ""))

    def _http_ssl(self) -> Any:
        assert self.tls is not None
        ctx = self.tls.ssl_context()
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def _add_services(self, server: Any) -> None:
        rpc_pb2_grpc.add_KVServicer_to_server(KVService(self.etcd), server)
        rpc_pb2_grpc.add_LeaseServicer_to_server(LeaseService(self.etcd), server)
        rpc_pb2_grpc.add_MaintenanceServicer_to_server(MaintenanceService(self.etcd), server)
        rpc_pb2_grpc.add_ClusterServicer_to_server(ClusterService(self.etcd), server)
        rpc_pb2_grpc.add_AuthServicer_to_server(AuthService(self.etcd), server)
        add_watch_service(server, self.etcd)
        add_lock_service(server, self.etcd)
        add_election_service(server, self.etcd)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)

    async def _start_serving(self) -> None:
        needs_tls = self.listen_tls or self.client_http_listen_tls
        if needs_tls and (self.tls is None or self.tls.empty):
            raise ListenError("https client URLs need --cert-file and --key-file")
        if self.native_grpc:
            await self._start_native()
        else:
            await self._start_grpcio()
        await self._start_http_listeners()

    async def _start_native(self) -> None:
        """gRPC served in the event loop (meshkit.server.h2grpc) on the client ports."""
        st = self.settings
        server = GrpcServer(max_receive_message_length=st.max_request_bytes + GRPC_OVERHEAD_BYTES,
                            keepalive=KeepalivePolicy(min_time=st.grpc_keepalive_min_time_ms / 1000,
                                                      interval=st.grpc_keepalive_interval_ms / 1000,
                                                      timeout=st.grpc_keepalive_timeout_ms / 1000))
        self._grpc = server
        self._add_services(server)
        factory = server.protocol_factory
        grpc_tls = self.tls.grpc_ssl_context() if self.listen_tls and self.tls is not None else None
        if self.muxed:
            self.client_http = HttpEndpoints(make_client_app(self.etcd, self.client_http_routes))
            await self.client_http.start()
            http: Any = self.client_http.protocol_factory
        else:
            http = None  # gRPC only on these ports (--listen-client-http-urls)
        for secure, wanted in ((False, self.listen), (True, self.listen_tls)):
            if not wanted:
                continue
            mux = ClientMux(wanted, grpc=factory, http=http,
                            tls=(self._http_ssl() if http is not None else grpc_tls) if secure else None,
                            grpc_tls=grpc_tls if secure else None)
            self._muxes.append(mux)
            await mux.start()
        self.ports = [p for mux in self._muxes for p in mux.ports]

    async def _start_grpcio(self) -> None:
        server = grpc.aio.server(options=self._grpc_options)
        self._grpc = server
        generic = _GenericOnly(server)
        self._add_services(generic)
        creds = self.tls.server_credentials() if self.listen_tls and self.tls is not None else None

        targets: dict[bool, GrpcTarget] = {}
        if self.muxed:
            with contextlib.suppress(OSError):  # no temp dir: loopback TCP instead
                self._private_dir = tempfile.mkdtemp(prefix="meshkit-")
            for secure, wanted in ((False, self.listen), (True, self.listen_tls)):
                if wanted:
                    targets[secure] = self._bind_internal(server, creds if secure else None)
        else:
            for (host, port), secure in [*((a, False) for a in self.listen), *((a, True) for a in self.listen_tls)]:
                self.ports.append(self._bind_grpc(server, f"{host}:{port}", creds if secure else None,
                                                  f"{host}:{port}"))
        await server.start()
        if self.muxed:
            self.client_http = HttpEndpoints(make_client_app(self.etcd, self.client_http_routes))
            await self.client_http.start()
            factory = self.client_http.protocol_factory
            for secure, wanted in ((False, self.listen), (True, self.listen_tls)):
                if not wanted:
                    continue
                mux = ClientMux(wanted, grpc=targets[secure], http=factory,
                                tls=self._http_ssl() if secure else None)
                self._muxes.append(mux)
                await mux.start()
            self.ports = [p for mux in self._muxes for p in mux.ports]

    async def _start_http_listeners(self) -> None:
        if not self.muxed:
            client_app = make_client_app(self.etcd, self.client_http_routes)
            sites = [*((h, p, None) for h, p in self.client_http_listen),
                     *((h, p, self._http_ssl()) for h, p in self.client_http_listen_tls)]
            self.client_http = HttpEndpoints(client_app, sites)
            await _start_http(self.client_http, sites)
            self.client_http_ports = list(self.client_http.ports)
            log.info("serving client HTTP requests on %s",
                     ", ".join(f"{h}:{p}" for (h, _, _), p in zip(sites, self.client_http_ports, strict=True)))
        if self.metrics_listen:
            ssl_ctx = self.tls.ssl_context() if self.metrics_tls and self.tls is not None else None
            sites = [(h, p, ssl_ctx) for h, p in self.metrics_listen]
            self.http = HttpEndpoints(make_metrics_app(self.etcd), sites)
            await _start_http(self.http, sites)
            self.metrics_ports = list(self.http.ports)

    def _bind_grpc(self, server: grpc.aio.Server, address: str,
                   creds: grpc.ServerCredentials | None, shown: str) -> int:
        try:
            bound = (server.add_secure_port(address, creds) if creds is not None
                     else server.add_insecure_port(address))
        except RuntimeError as e:
            raise ListenError(f"listen tcp {shown}: bind: address already in use") from e
        if not bound:
            raise ListenError(f"listen tcp {shown}: bind: address already in use")
        return int(bound)

    def _bind_internal(self, server: grpc.aio.Server, creds: grpc.ServerCredentials | None) -> GrpcTarget:
        """grpc's own listener behind the mux: a unix socket in our private
        directory, else an ephemeral loopback port."""
        name = "grpc-tls.sock" if creds else "grpc.sock"
        path = internal_socket_path(self._private_dir, name) if self._private_dir else None
        if path is not None:
            with contextlib.suppress(ListenError):
                self._bind_grpc(server, f"unix:{path}", creds, path)
                self.grpc_internal.append(f"unix:{path}")
                return GrpcTarget(path=path)
        port = self._bind_grpc(server, "127.0.0.1:0", creds, "127.0.0.1:0")
        self.grpc_internal.append(f"127.0.0.1:{port}")
        return GrpcTarget(host="127.0.0.1", port=port)

    async def _stop_serving(self, grace: float) -> None:
        for mux in self._muxes:  # no new connections
            await mux.close_listeners()
        for endpoints in (self.http, self.client_http):
            if endpoints is not None:
                await endpoints.close()
        self.http = self.client_http = None
        self.health.shutdown()
        if self._grpc is not None:
            with contextlib.suppress(Exception):
                await self._grpc.stop(grace)  # GOAWAY travels through the mux
            self._grpc = None
        for mux in self._muxes:
            await mux.close()
        self._muxes.clear()
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
            self._private_dir = None

    async def _stop_when_removed(self) -> None:
        """etcd's server stops once its member is removed (and `etcd` exits):
        stop serving here too, instead of answering reads from a member that is
        no longer in the cluster until the embedder closes it."""
        await self.etcd.removed.wait()
        log.warning("this member was removed from the cluster: stopping serving client requests")
        # (the grace lets an answer already on its way out, e.g. to the MemberRemove
        # that removed this member through its own port, reach its client)
        await self._shutdown(grace=1.0, error=MemberRemovedError())

    async def _shutdown(self, grace: float, error: MemberRemovedError | None = None) -> None:
        async with self._stop_lock:
            if self._shut:
                return
            try:
                await self._stop_serving(grace)
                await self.etcd.close()
            finally:
                self._shut = True
                self.stop_error = error
                self.stopped.set()

    async def close(self, grace: float = 1.0) -> None:
        w, self._watch_removed = self._watch_removed, None
        if w is not None:
            if not self.etcd.removed.is_set():
                w.cancel()  # still waiting: nothing started
            # (else a stop of its own is under way: let it finish)
            with contextlib.suppress(asyncio.CancelledError):
                await w
        await self._shutdown(grace)

    @property
    def endpoint(self) -> str:
        host = (self.listen or self.listen_tls)[0][0]
        return f"{host}:{self.ports[0]}"


async def _start_http(endpoints: HttpEndpoints, sites: Sequence[tuple[str, int, Any]]) -> None:
    try:
        await endpoints.start()
    except OSError as e:
        where = ", ".join(f"{h}:{p}" for h, p, _ in sites)
        raise ListenError(f"listen tcp {where}: {e.strerror or e}") from e
