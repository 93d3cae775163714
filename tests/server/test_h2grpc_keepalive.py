"""gRPC keepalive on meshkit's own server, as etcd's grpc-go applies
--grpc-keepalive-min-time, -interval and -timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import grpc
import pytest

from meshkit.server.h2grpc import GrpcServer
from meshkit.server.h2grpc.keepalive import KeepalivePolicy, PingStrikes, keepalive_due
from tests.server import h2client as hc
from tests.server.h2client import H2Client

pytestmark = pytest.mark.timeout(30)
ENHANCE_YOUR_CALM = 0xB


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


@asynccontextmanager
async def serving(policy: KeepalivePolicy) -> AsyncIterator[int]:
    server = GrpcServer(max_receive_message_length=1 << 20, keepalive=policy)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "test.T", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)})])
    listener = await asyncio.get_running_loop().create_server(server.protocol_factory, "127.0.0.1", 0)
    try:
        yield int(listener.sockets[0].getsockname()[1])
    finally:
        listener.close()
        await server.stop(0)
        await listener.wait_closed()


def _ping(c: H2Client, n: int) -> None:
    c.send_raw(hc.frame(hc.PING, 0, 0, n.to_bytes(8, "big")))


def _acks(c: H2Client) -> Callable[[], int]:
    return lambda: sum(1 for f in c.received if f.type == hc.PING and f.flags & hc.ACK)


def test_strike_rules() -> None:
    s = PingStrikes(5.0)
    assert not s.on_ping(0.0)  # a first ping is never a strike
    assert [s.on_ping(t) for t in (1.0, 2.0)] == [False, False]
    assert s.strikes == 2
    s.forgive()  # the server sent data: the next ping is not checked, strikes start over
    assert not s.on_ping(2.1) and s.strikes == 0
    assert [s.on_ping(t) for t in (3.0, 4.0, 4.5)] == [False, False, True]
    s = PingStrikes(5.0)
    assert not any(s.on_ping(t) for t in (0.0, 5.0, 10.0, 15.0, 20.0))  # every 5 s is fine
    policy = KeepalivePolicy(interval=10.0, timeout=2.0)
    assert keepalive_due(9.0, 0.0, None, policy) is None
    assert keepalive_due(10.0, 0.0, None, policy) == "ping"
    assert keepalive_due(11.0, 0.0, 10.0, policy) is None
    assert keepalive_due(12.0, 0.0, 10.0, policy) == "close"
    assert keepalive_due(1e9, 0.0, None, KeepalivePolicy(interval=0)) is None  # 0 disables


async def test_pings_too_often_end_the_connection_with_too_many_pings() -> None:
    async with serving(KeepalivePolicy(min_time=5.0)) as port:
        c = await H2Client.connect(port)
        try:
            for i in range(3):
                _ping(c, i)
            await c.wait_for(lambda: _acks(c)() == 3)
            assert c.goaways() == []
            _ping(c, 3)  # the third strike
            await c.wait_for(lambda: bool(c.goaways()) and c.eof)
            (_last, code, debug), = c.goaways()
            assert (code, debug) == (ENHANCE_YOUR_CALM, b"too_many_pings")
        finally:
            await c.close()


async def test_answers_in_between_forgive_the_strikes() -> None:
    async with serving(KeepalivePolicy(min_time=5.0)) as port:
        c = await H2Client.connect(port)
        try:
            # after each answer the first ping is free: three per round, two strikes
            for round_ in range(4):
                for i in range(3):
                    _ping(c, round_ * 10 + i)
                await c.wait_for(lambda r=round_: _acks(c)() == 3 * (r + 1))
                call = await c.call("/test.T/Echo", b"x")  # the server sends headers and data
                assert call.code == 0
            assert c.goaways() == [] and not c.eof
        finally:
            await c.close()


async def test_server_pings_a_silent_client_and_closes_it_when_unanswered() -> None:
    async with serving(KeepalivePolicy(interval=0.2, timeout=0.3)) as port:
        alive = await H2Client.connect(port)  # answers pings (h2 ACKs them)
        dead = await H2Client.connect(port)
        dead.raw_only = True  # takes frames in, answers nothing
        try:
            # both read at once: the live one answers each ping as it comes
            await asyncio.gather(dead.wait_for(lambda: dead.eof, limit=5), alive.quiet(1.5))
            assert any(f.type == hc.PING and not f.flags & hc.ACK for f in dead.received)
            pings = [f for f in alive.received if f.type == hc.PING and not f.flags & hc.ACK]
            assert len(pings) >= 2 and not alive.eof
            assert (await alive.call("/test.T/Echo", b"still")).messages() == [b"still"]
        finally:
            await alive.close()
            await dead.close()


async def test_the_server_flags_set_the_policy(tmp_path: object) -> None:
    """--grpc-keepalive-min-time 1.5s, -interval 1h, -timeout 3s on a member."""
    from pathlib import Path

    from meshkit.server.embed import EmbeddedServer

    async with EmbeddedServer.for_test(Path(str(tmp_path)) / "d", 0, grpc_keepalive_min_time_ms=1500,
                                       grpc_keepalive_interval_ms=3_600_000,
                                       grpc_keepalive_timeout_ms=3000) as srv:
        assert isinstance(srv._grpc, GrpcServer)
        assert srv._grpc.keepalive == KeepalivePolicy(min_time=1.5, interval=3600.0, timeout=3.0)
