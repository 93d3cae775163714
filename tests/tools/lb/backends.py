"""Real gRPC backends on 127.0.0.1 for the load-balancing tests: each answers
``/meshkit.test.Echo/Who`` with its own id (raw bytes, no generated code needed),
optionally holding a call until the test releases it, and serves grpc.health.v1."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc

WHO = "/meshkit.test.Echo/Who"
SLOW = "/meshkit.test.Echo/Slow"


class Backend:
    """``async with Backend("b1") as b:`` listens on ``b.addr`` until left or ``stop()``."""

    def __init__(self, ident: str, port: int = 0) -> None:
        self.ident = ident
        self.port = port
        self.calls = 0
        self.in_flight = 0
        self.release = asyncio.Event()  # SLOW calls wait for it
        self.slow_started = asyncio.Event()
        self.serving = True  # what grpc.health.v1.Health/Check answers
        self._server: grpc.aio.Server | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _who(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.calls += 1
        return self.ident.encode()

    async def _slow(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.calls += 1
        self.in_flight += 1
        self.slow_started.set()
        try:
            await self.release.wait()
        finally:
            self.in_flight -= 1
        return self.ident.encode()

    async def start(self) -> None:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        handlers = {
            "Who": grpc.unary_unary_rpc_method_handler(self._who),
            "Slow": grpc.unary_unary_rpc_method_handler(self._slow),
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("meshkit.test.Echo", handlers),))
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(self._check)}),))
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        await server.start()
        self._server = server

    async def _check(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        # HealthCheckResponse{status: SERVING (1) | NOT_SERVING (2)}
        return b"\x08\x01" if self.serving else b"\x08\x02"

    async def stop(self, grace: float | None = None) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(grace)

    async def __aenter__(self) -> Backend:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        await self.stop(0)


def spread_ok(counts: Counter[str], expected: dict[str, float], tolerance: float = 0.10) -> bool:
    """Every id got its expected share of the calls within ``tolerance`` (relative)."""
    total = sum(counts.values())
    wsum = sum(expected.values())
    return set(counts) <= set(expected) and all(
        abs(counts.get(k, 0) - total * w / wsum) <= tolerance * total * w / wsum
        for k, w in expected.items())
