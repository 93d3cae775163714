"""The native gRPC server: grpc.aio's servicer API over our own HTTP/2.

grpcio's server costs ~250 us of CPU per call here before a handler runs (its
C core, its threads and the bridge into asyncio); etcd does a whole Put in less
than half of that. This server speaks gRPC's HTTP/2 protocol in the event loop
itself (benchmarks/grpc_floor.py: a do-nothing call costs ~40 us) and runs the
same servicers: they register through the generated ``add_*Servicer_to_server``
(``add_generic_rpc_handlers`` / ``add_registered_method_handlers``) and see a
grpc.aio-compatible ServicerContext. It has no listener of its own: the client
port (:mod:`meshkit.server.clientport`) hands it accepted connections, through
``protocol_factory``. Errors for unknown methods and oversized messages are
grpc-go's, as etcd answers them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

import grpc

from meshkit.server.h2grpc.connection import Connection, Stream
from meshkit.server.h2grpc.context import Aborted
from meshkit.server.h2grpc.keepalive import KeepalivePolicy

log = logging.getLogger("meshkit.server.grpc")


@dataclass(frozen=True, slots=True)
class Method:
    request_streaming: bool
    response_streaming: bool
    handler: Callable[..., Any]
    deserialize: Callable[[bytes], Any]
    serialize: Callable[[Any], bytes]

    @classmethod
    def of(cls, h: grpc.RpcMethodHandler) -> Method:
        if h.request_streaming:
            fn = h.stream_stream if h.response_streaming else h.stream_unary
        else:
            fn = h.unary_stream if h.response_streaming else h.unary_unary
        return cls(bool(h.request_streaming), bool(h.response_streaming), cast(Callable[..., Any], fn),
                   h.request_deserializer or _identity, h.response_serializer or _identity)


def _identity(b: Any) -> Any:
    return b


class _CallDetails(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


class GrpcServer:
    """Handlers and connections; ``protocol_factory`` serves one accepted connection."""

    def __init__(self, *, max_receive_message_length: int,
                 keepalive: KeepalivePolicy | None = None) -> None:
        self.max_receive = max_receive_message_length
        self.keepalive = keepalive or KeepalivePolicy()
        self._pinger: asyncio.Task[None] | None = None
        self.connections: set[Connection] = set()
        self._methods: dict[bytes, Method | None] = {}
        self._generic: list[grpc.GenericRpcHandler] = []
        self._services: set[str] = set()
        self._stopping = False

    # ---- registration (the generated add_*Servicer_to_server call these) --------

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        for h in handlers:
            self._generic.append(h)
            if isinstance(h, grpc.ServiceRpcHandler):
                # known before its first call: "unknown method" rather than "unknown service"
                self._services.add(h.service_name())
        self._methods = {k: v for k, v in self._methods.items() if v is not None}

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self._services.add(service)
        for name, h in handlers.items():
            self._methods[f"/{service}/{name}".encode()] = Method.of(h)

    def lookup(self, path: bytes) -> Method | None:
        try:
            return self._methods[path]
        except KeyError:
            pass
        method = None
        name = path.decode("utf-8", errors="replace")
        for g in self._generic:
            h = g.service(_CallDetails(name))
            if h is not None:
                method = Method.of(h)
                self._services.add(name.lstrip("/").rpartition("/")[0])
                break
        if len(self._methods) < 1024:  # never grown without bound by clients' paths
            self._methods[path] = method
        return method

    def knows_service(self, service: str) -> bool:
        return service in self._services

    def protocol_factory(self, common_name: str | None = None) -> Connection:
        if self._pinger is None and self.keepalive.interval > 0 and not self._stopping:
            self._pinger = asyncio.get_running_loop().create_task(self._keepalive(), name="grpc-keepalive")
        return Connection(self, common_name=common_name)

    # ---- calls ----------------------------------------------------------------

    async def run_unary(self, stream: Stream) -> None:
        method = stream.method
        assert stream.request is not None
        try:
            request = method.deserialize(stream.request)
        except Exception as e:
            stream.finish(grpc.StatusCode.INTERNAL, f"grpc: error unmarshalling request: {e}")
            return
        stream.request = None
        try:
            if method.response_streaming:
                await self._respond_stream(stream, method.handler(request, stream.ctx))
                return
            response = await method.handler(request, stream.ctx)
            if stream.finished:
                return
            payload = method.serialize(response)
            if not stream.send_unary(payload):
                stream.send_headers()
                await stream.send_data(b"\x00" + len(payload).to_bytes(4, "big") + payload)
                stream.finish(grpc.StatusCode.OK)
        except BaseException as e:
            self._failed(stream, e)

    async def run_streaming(self, stream: Stream) -> None:
        method = stream.method
        try:
            result = method.handler(stream.requests, stream.ctx)
            if method.response_streaming:
                await self._respond_stream(stream, result)
                return
            response = await result
            if stream.finished:
                return
            payload = method.serialize(response)
            stream.send_headers()
            await stream.send_data(b"\x00" + len(payload).to_bytes(4, "big") + payload)
            stream.finish(grpc.StatusCode.OK)
        except BaseException as e:
            self._failed(stream, e)

    async def _respond_stream(self, stream: Stream, result: Any) -> None:
        if inspect.isasyncgen(result):
            try:
                async for response in result:
                    await stream.write_message(response)
            finally:
                await result.aclose()
        elif result is not None:
            await result  # a handler that writes through context.write
        stream.finish(stream.ctx.code(), stream.ctx.details(), stream.ctx.trailing_metadata())

    def _failed(self, stream: Stream, e: BaseException) -> None:
        if isinstance(e, Aborted):
            stream.finish(e.code, e.details, stream.ctx.trailing_metadata())
        elif isinstance(e, asyncio.CancelledError):
            # the client reset the call, its deadline passed or the server stops
            stream.finish(grpc.StatusCode.CANCELLED, "context canceled")
        elif isinstance(e, Exception):
            log.error("unexpected error in %s", stream.method.handler, exc_info=e)
            stream.finish(grpc.StatusCode.UNKNOWN, f"Unexpected {type(e)}: {e}")
        else:  # KeyboardInterrupt, SystemExit
            stream.reset()
            raise e

    # ---- shutdown -------------------------------------------------------------

    async def _keepalive(self) -> None:
        policy = self.keepalive
        period = max(0.05, min(1.0, policy.interval / 2, policy.timeout / 2))
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            for conn in list(self.connections):
                conn.keepalive(now, policy)

    async def stop(self, grace: float | None) -> None:
        """GOAWAY to every client, wait up to ``grace`` for running calls, end the rest."""
        self._stopping = True
        if self._pinger is not None:
            self._pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pinger
            self._pinger = None
        for conn in list(self.connections):
            conn.go_away()
        running = [s.task for c in self.connections for s in c.streams.values() if s.task is not None]
        if grace and running:
            await asyncio.wait(running, timeout=grace)
        tasks = [s.task for c in self.connections for s in c.streams.values() if s.task is not None]
        for conn in list(self.connections):
            conn.abort()
        # let cancelled handlers run their cleanups before the member closes
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
