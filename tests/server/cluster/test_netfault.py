"""The network fault injector of tests/support/netfault.py on its own: raw CONNECT
tunnels to echo servers standing in for members, then a grpc.aio channel through it
(the channel option ``grpc.http_proxy`` does what the member processes' ``grpc_proxy``
variable does, without touching this process's environment)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.server.cluster.proc_cluster import ProcCluster
from tests.support.netfault import NetFault

NAMES = ("a", "b", "c")


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def _members() -> AsyncIterator[NetFault]:
    """Echo servers as members a, b, c and the injector in front of them."""
    servers = [await asyncio.start_server(_echo, "127.0.0.1", 0) for _ in NAMES]
    try:
        ports = {n: int(s.sockets[0].getsockname()[1]) for n, s in zip(NAMES, servers, strict=True)}
        async with NetFault(ports) as net:
            yield net
    finally:
        for s in servers:
            s.close()
            await s.wait_closed()


async def _dial(net: NetFault, src: str, dst: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection from ``src``'s proxy port with the CONNECT for ``dst`` sent."""
    r, w = await asyncio.open_connection("127.0.0.1", net.proxy_port[src])
    w.write(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (net.peers[dst], net.peers[dst]))
    await w.drain()
    return r, w


async def _answer(r: asyncio.StreamReader, limit: float = 2.0) -> bytes:
    async with asyncio.timeout(limit):
        return await r.readuntil(b"\r\n\r\n")


async def _round_trip(r: asyncio.StreamReader, w: asyncio.StreamWriter, data: bytes) -> None:
    w.write(data)
    await w.drain()
    async with asyncio.timeout(2.0):
        assert await r.readexactly(len(data)) == data


async def _tunnel(net: NetFault, src: str, dst: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    r, w = await _dial(net, src, dst)
    assert (await _answer(r)).startswith(b"HTTP/1.1 200 ")
    await _round_trip(r, w, b"hello")
    return r, w


async def _unanswered(r: asyncio.StreamReader, wait: float = 0.5) -> None:
    """Nothing comes back (and the connection stays open) for ``wait`` seconds."""
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(wait):
            await r.read(1)


async def test_a_cut_kills_the_pairs_tunnels_and_holds_new_ones_until_healed() -> None:
    async with _members() as net:
        ab_r, ab_w = await _tunnel(net, "a", "b")
        ba_r, ba_w = await _tunnel(net, "b", "a")
        ac_r, ac_w = await _tunnel(net, "a", "c")
        assert net.tunnels[("a", "b")] == 1 and net.bytes[("a", "b")] == 10  # 5 each way

        net.cut("a", "b")
        # the open a -> b tunnel is gone at once
        async with asyncio.timeout(2.0):
            assert await ab_r.read(1) == b""
        # a new one is held: no answer, no bytes through, while the other links work
        held_r, held_w = await _dial(net, "a", "b")
        await _unanswered(held_r)
        assert net.held[("a", "b")] == 1 and net.tunnels[("a", "b")] == 1
        await _round_trip(ba_r, ba_w, b"b to a still")  # directed: b's own connection to a
        await _round_trip(ac_r, ac_w, b"a to c still")
        await _tunnel(net, "b", "a")  # and new ones from b to a are made
        carried = net.bytes[("a", "b")]

        net.heal("a", "b")
        # the held CONNECT is answered now and carries bytes again
        assert (await _answer(held_r)).startswith(b"HTTP/1.1 200 ")
        await _round_trip(held_r, held_w, b"healed")
        assert net.bytes[("a", "b")] == carried + 12
        for w in (ab_w, ba_w, ac_w, held_w):
            w.close()


async def test_isolate_cuts_both_ways_and_heal_all_restores() -> None:
    async with _members() as net:
        open_ = {pair: await _tunnel(net, *pair) for pair in (("a", "b"), ("c", "a"), ("b", "c"))}
        net.isolate("a")
        assert {(x, y) for x in NAMES for y in NAMES if x != y and net.is_cut(x, y)} == {
            ("a", "b"), ("b", "a"), ("a", "c"), ("c", "a")}
        for pair in (("a", "b"), ("c", "a")):
            async with asyncio.timeout(2.0):
                assert await open_[pair][0].read(1) == b""
        await _round_trip(*open_[("b", "c")], b"b to c unaffected")
        held = [await _dial(net, *pair) for pair in (("b", "a"), ("a", "c"))]
        for r, _ in held:
            await _unanswered(r, 0.3)
        net.heal_all()
        for r, w in held:
            assert (await _answer(r)).startswith(b"HTTP/1.1 200 ")
            await _round_trip(r, w, b"back")
            w.close()
        assert not any(net.is_cut(x, y) for x in NAMES for y in NAMES if x != y)


async def test_a_held_connection_the_dialer_gives_up_is_dropped() -> None:
    async with _members() as net:
        net.cut("a", "b")
        r, w = await _dial(net, "a", "b")
        await _unanswered(r, 0.2)
        w.close()
        await asyncio.sleep(0.1)  # (the proxy sees the close before the heal)
        net.heal("a", "b")
        await asyncio.sleep(0.1)
        assert net.tunnels[("a", "b")] == 0  # never connected to b
        await _tunnel(net, "a", "b")


async def test_only_connects_to_members_on_loopback_are_tunnelled() -> None:
    async with _members() as net:
        for target in (b"127.0.0.1:1", b"localhost:%d" % net.peers["b"], b"10.0.0.1:%d" % net.peers["b"]):
            r, w = await asyncio.open_connection("127.0.0.1", net.proxy_port["a"])
            w.write(b"CONNECT " + target + b" HTTP/1.1\r\n\r\n")
            assert (await _answer(r)).startswith(b"HTTP/1.1 403 ")
            w.close()
        r, w = await asyncio.open_connection("127.0.0.1", net.proxy_port["a"])
        w.write(b"GET / HTTP/1.1\r\n\r\n")
        assert (await _answer(r)).startswith(b"HTTP/1.1 405 ")
        w.close()


# ---- a grpc.aio channel through the injector ---------------------------------------

_METHOD = "/test.Echo/Call"


async def _grpc_member() -> grpc.aio.Server:
    async def call(req: bytes, _ctx: grpc.aio.ServicerContext) -> bytes:
        return req

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", {
        "Call": grpc.unary_unary_rpc_method_handler(call)}),))
    return server


async def test_grpc_through_the_injector_stops_on_a_cut_and_resumes_on_heal() -> None:
    server = await _grpc_member()
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        # b is the gRPC server; a only dials
        async with NetFault({"a": 1, "b": port}) as net:
            assert "grpc_proxy" not in os.environ and "http_proxy" not in os.environ
            options = [("grpc.http_proxy", f"http://127.0.0.1:{net.proxy_port['a']}")]
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as ch:
                call = ch.unary_unary(_METHOD, request_serializer=None, response_deserializer=None)
                assert await call(b"x", timeout=5.0) == b"x"
                assert net.tunnels[("a", "b")] == 1 and net.bytes[("a", "b")] > 0

                net.cut("a", "b")
                carried = net.bytes[("a", "b")]
                t = time.monotonic()
                failures = []
                while time.monotonic() - t < 2.0:  # bounded: calls fail, none gets through
                    with pytest.raises(grpc.aio.AioRpcError) as ei:
                        await call(b"y", timeout=0.5)
                    failures.append(ei.value.code())
                # after the reset the channel dials again and waits like over a dead link
                # (UNAVAILABLE only for a call that raced the reset)
                assert grpc.StatusCode.DEADLINE_EXCEEDED in failures, failures
                assert set(failures) <= {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE}
                assert net.bytes[("a", "b")] == carried and net.held[("a", "b")] >= 1

                net.heal("a", "b")
                t = time.monotonic()
                assert await call(b"z", timeout=5.0) == b"z"
                resumed = time.monotonic() - t
                assert resumed < 2.0, resumed  # the held dial completes: no backoff wait
                assert net.tunnels[("a", "b")] == 2
    finally:
        await server.stop(0)


async def test_proc_cluster_sets_the_proxy_for_members_only(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Each member process gets its own ``grpc_proxy`` (and no variable that could
    exempt 127.0.0.1 from it); the test process has none, so the test's clients
    reach the members directly, and a cluster without netfault sets none."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_grpc_proxy", "127.0.0.1")
    async with ProcCluster(tmp_path, netfault=True) as p:
        for n in p.names:
            env = p.env(n)
            assert env["grpc_proxy"] == f"http://127.0.0.1:{p.net.proxy_port[n]}"
            assert not {"no_proxy", "no_grpc_proxy"} & {k.lower() for k in env}
        assert len(set(p.net.proxy_port.values())) == len(p.names)
    assert "grpc_proxy" not in os.environ and "grpc_proxy" not in ProcCluster(tmp_path).env("p1")
