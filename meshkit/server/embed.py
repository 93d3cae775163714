"""An in-process meshkit member: the driver plus its gRPC front door.

``async with EmbeddedServer(settings, listen=[("127.0.0.1", port)]) as srv:``
starts a member and serves etcd's v3 gRPC API on the given addresses; leaving
the block stops serving, then stops the member. Tests use it directly;
``meshkit server`` uses it through :mod:`meshkit.server.run`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from meshkit._internal.errors import MeshkitError
from meshkit.api.etcdserverpb import rpc_pb2_grpc
from meshkit.server.api.auth import AuthService
from meshkit.server.api.election import add_election_service
from meshkit.server.api.kv import KVService
from meshkit.server.api.lease import LeaseService
from meshkit.server.api.lock import add_lock_service
from meshkit.server.api.maintenance import ClusterService, MaintenanceService
from meshkit.server.api.watch import add_watch_service
from meshkit.server.etcdserver.server import EtcdServer, ServerSettings
from meshkit.server.tls import TLSInfo
from meshkit.server.transport import Transport

log = logging.getLogger("meshkit.server")

# etcd lets gRPC requests exceed --max-request-bytes by this much on the wire so
# that the size check inside the server, with etcd's own error, is what answers.
GRPC_OVERHEAD_BYTES = 512 * 1024
MAX_SEND_BYTES = 2**31 - 1


class ListenError(MeshkitError):
    pass


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


class EmbeddedServer:
    def __init__(self, settings: ServerSettings, listen: Sequence[tuple[str, int]],
                 *, grpc_extra_options: Sequence[tuple[str, Any]] = (),
                 transport: Transport | None = None,
                 listen_tls: Sequence[tuple[str, int]] = (), tls: TLSInfo | None = None,
                 metrics_listen: Sequence[tuple[str, int]] = (), metrics_tls: bool = False) -> None:
        self.settings = settings
        self.listen = list(listen)
        # https client URLs, served with ``tls`` (etcd's --cert-file, --key-file, ...)
        self.listen_tls = list(listen_tls)
        self.tls = tls
        # --listen-metrics-urls: /metrics and /health over HTTP/1.1
        self.metrics_listen = list(metrics_listen)
        self.metrics_tls = metrics_tls
        self.http: Any = None
        self.metrics_ports: list[int] = []
        self.etcd = EtcdServer(settings, transport=transport)
        self._grpc: grpc.aio.Server | None = None
        self._grpc_options = [
            *grpc_options(
                settings.max_request_bytes,
                keepalive_min_time_ms=settings.grpc_keepalive_min_time_ms,
                keepalive_interval_ms=settings.grpc_keepalive_interval_ms,
                keepalive_timeout_ms=settings.grpc_keepalive_timeout_ms,
            ),
            *grpc_extra_options,
        ]
        self.ports: list[int] = []

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

    async def __aenter__(self) -> EmbeddedServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        await self.etcd.start()
        try:
            server = grpc.aio.server(options=self._grpc_options)
            generic = _GenericOnly(server)
            rpc_pb2_grpc.add_KVServicer_to_server(KVService(self.etcd), generic)
            rpc_pb2_grpc.add_LeaseServicer_to_server(LeaseService(self.etcd), generic)
            rpc_pb2_grpc.add_MaintenanceServicer_to_server(MaintenanceService(self.etcd), generic)
            rpc_pb2_grpc.add_ClusterServicer_to_server(ClusterService(self.etcd), generic)
            rpc_pb2_grpc.add_AuthServicer_to_server(AuthService(self.etcd), generic)
            add_watch_service(server, self.etcd)
            add_lock_service(generic, self.etcd)
            add_election_service(generic, self.etcd)
            creds = self.tls.server_credentials() if self.listen_tls and self.tls is not None else None
            if self.listen_tls and creds is None:
                raise ListenError("https client URLs need --cert-file and --key-file")
            for (host, port), secure in [*((a, False) for a in self.listen), *((a, True) for a in self.listen_tls)]:
                try:
                    if secure:
                        assert creds is not None
                        bound = server.add_secure_port(f"{host}:{port}", creds)
                    else:
                        bound = server.add_insecure_port(f"{host}:{port}")
                except RuntimeError as e:
                    raise ListenError(f"listen tcp {host}:{port}: bind: address already in use") from e
                if not bound:
                    raise ListenError(f"listen tcp {host}:{port}: bind: address already in use")
                self.ports.append(bound)
            await server.start()
            self._grpc = server
            if self.metrics_listen:
                from meshkit.server.api.http import HttpEndpoints

                ssl_ctx = self.tls.ssl_context() if self.metrics_tls and self.tls is not None else None
                self.http = HttpEndpoints(self.etcd, self.metrics_listen, ssl_context=ssl_ctx)
                await self.http.start()
                self.metrics_ports = list(self.http.ports)
        except BaseException:
            if self._grpc is not None:
                with contextlib.suppress(Exception):
                    await self._grpc.stop(0)
                self._grpc = None
            await self.etcd.close()
            raise
        log.info("serving client requests on %s",
                 ", ".join(f"{h}:{p}" for (h, _), p in zip([*self.listen, *self.listen_tls], self.ports, strict=True)))

    async def close(self, grace: float = 1.0) -> None:
        if self.http is not None:
            await self.http.close()
            self.http = None
        if self._grpc is not None:
            with contextlib.suppress(Exception):
                await self._grpc.stop(grace)
            self._grpc = None
        await self.etcd.close()

    @property
    def endpoint(self) -> str:
        host = (self.listen or self.listen_tls)[0][0]
        return f"{host}:{self.ports[0]}"
