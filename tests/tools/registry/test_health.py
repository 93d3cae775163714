"""Health checks against real targets on 127.0.0.1, and the thresholds on a fake clock."""

from __future__ import annotations

import asyncio
import socket
import sys

import grpc
import pytest

from meshkit._internal.clock import FakeClock
from meshkit.registry import (
    CheckResult,
    ExecCheck,
    GRPCCheck,
    HealthMonitor,
    HealthState,
    HTTPCheck,
    InvalidCheckError,
    TCPCheck,
    parse_check,
)
from tests.support.procs import free_port
from tests.tools.registry.conftest import HealthApp


def test_thresholds() -> None:
    s = HealthState(rise=2, fall=3)
    assert not s.healthy
    assert s.record(True) is False and not s.healthy
    assert s.record(True) is True and s.healthy
    assert s.record(False) is False and s.record(False) is False and s.healthy
    assert s.record(True) is False  # a pass resets the failure count
    assert [s.record(False) for _ in range(3)] == [False, False, True] and not s.healthy
    with pytest.raises(ValueError):
        HealthState(rise=0)


class ScriptedCheck:
    def __init__(self, results: list[bool]) -> None:
        self.results = results
        self.calls = 0

    def describe(self) -> str:
        return "scripted"

    async def probe(self, timeout: float) -> CheckResult:  # noqa: ASYNC109
        r = self.results[min(self.calls, len(self.results) - 1)]
        self.calls += 1
        return CheckResult(r, "ok" if r else "bad")


async def test_monitor_on_fake_clock() -> None:
    clock = FakeClock()
    check = ScriptedCheck([True, True, False, True, False, False, True])
    seen: list[tuple[float, bool]] = []

    async def on_change(healthy: bool, result: CheckResult) -> None:
        seen.append((clock.monotonic(), healthy))

    async with HealthMonitor(check, on_change, interval=10, timeout=1, rise=2, fall=2,
                             clock=clock) as mon:
        for _ in range(7):
            for _ in range(20):  # let the probe loop run up to its next sleep
                await asyncio.sleep(0)
            clock.advance(10)
        for _ in range(20):
            await asyncio.sleep(0)
        # Probes at t=0,10,...,70: healthy after the 2nd pass (t=10); a lone failure
        # (t=20) changes nothing; two in a row (t=40, 50) make it unhealthy; two passes
        # (t=60, 70) make it healthy again.
        assert seen == [(10, True), (50, False), (70, True)]
        assert mon.probes == 8
        assert mon.healthy


async def test_http_check(health_app: HealthApp) -> None:
    check = HTTPCheck(health_app.url)
    assert (await check.probe(2)).passed
    health_app.healthy = False
    r = await check.probe(2)
    assert not r.passed and "503" in r.detail
    refused = await HTTPCheck(f"http://127.0.0.1:{free_port()}/").probe(2)
    assert not refused.passed


async def test_http_check_timeout() -> None:
    # A server that accepts and never answers.
    srv = await asyncio.start_server(lambda r, w: asyncio.sleep(5), "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        r = await HTTPCheck(f"http://127.0.0.1:{port}/").probe(0.3)
        assert not r.passed
    finally:
        srv.close()


async def test_tcp_check() -> None:
    srv = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        assert (await TCPCheck("127.0.0.1", port).probe(2)).passed
    finally:
        srv.close()
        await srv.wait_closed()
    assert not (await TCPCheck("127.0.0.1", free_port()).probe(2)).passed


def _health_server(status: dict[str, int]) -> grpc.aio.Server:
    """A real grpc.health.v1 server with hand-encoded messages (no grpcio-health-checking)."""
    from meshkit.registry.health import _decode_health_status

    async def check(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        # HealthCheckRequest{service = 1}: tag 0x0a, a one-byte length, the name.
        service = request[2:].decode() if request else ""
        if service not in status:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        value = status[service]
        assert _decode_health_status(bytes([0x08, value])) == value
        return bytes([0x08, value])

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health",
        {"Check": grpc.unary_unary_rpc_method_handler(check, request_deserializer=None,
                                                      response_serializer=None)})
    server.add_generic_rpc_handlers((handler,))
    return server


async def test_grpc_health_check() -> None:
    status = {"": 1, "api": 2}
    server = _health_server(status)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        target = f"127.0.0.1:{port}"
        assert (await GRPCCheck(target).probe(2)).passed
        r = await GRPCCheck(target, "api").probe(2)
        assert not r.passed and r.detail == "NOT_SERVING"
        status["api"] = 1
        assert (await GRPCCheck(target, "api").probe(2)).passed
        r = await GRPCCheck(target, "nope").probe(2)
        assert not r.passed and "NOT_FOUND" in r.detail
    finally:
        await server.stop(0)
    assert not (await GRPCCheck(f"127.0.0.1:{free_port()}").probe(1)).passed


async def test_exec_check() -> None:
    assert (await ExecCheck([sys.executable, "-c", "pass"]).probe(5)).passed
    r = await ExecCheck([sys.executable, "-c", "raise SystemExit(3)"]).probe(5)
    assert not r.passed and "3" in r.detail
    r = await ExecCheck([sys.executable, "-c", "import time; time.sleep(10)"]).probe(0.5)
    assert not r.passed and "timed out" in r.detail
    assert not (await ExecCheck(["/nonexistent/cmd"]).probe(1)).passed


def test_parse_check() -> None:
    assert isinstance(parse_check("http://127.0.0.1:80/health"), HTTPCheck)
    assert isinstance(parse_check("https://x:443/"), HTTPCheck)
    tcp = parse_check("tcp://127.0.0.1:9000")
    assert isinstance(tcp, TCPCheck) and tcp.port == 9000
    g = parse_check("grpc://127.0.0.1:50051/api.v1")
    assert isinstance(g, GRPCCheck) and g.service == "api.v1" and g.target == "127.0.0.1:50051"
    e = parse_check("curl -sf 'http://x/a b'")
    assert isinstance(e, ExecCheck) and e.argv == ["curl", "-sf", "http://x/a b"]
    for bad in ("", "tcp://nohost", "tcp://h:99999", "tcp://h:1/x", "grpc://:1", "a 'unclosed"):
        with pytest.raises(InvalidCheckError):
            parse_check(bad)


def test_free_port_is_free() -> None:
    # The refused-connection cases above rely on free_port() not listening.
    port = free_port()
    with socket.socket() as s, pytest.raises(OSError):
        s.settimeout(1)
        s.connect(("127.0.0.1", port))
