"""The native gRPC server (meshkit.server.h2grpc) at the HTTP/2 level.

A raw client (tests/server/h2client.py: the ``h2`` library for protocol state,
every frame also seen and asserted on here) against an in-process member on
127.0.0.1, and grpcio clients where a real client says more. Flow control,
framing edge cases, protocol errors, cancellation, deadlines and shutdown.
Side-by-side checks of error answers against the real etcd are in
tests/compat/test_grpc_errors.py.
"""

from __future__ import annotations

import asyncio
import os
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest

from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.api.etcdserverpb import rpc_pb2_grpc as rpc
from meshkit.api.meshkitpb import internal_pb2 as ipb
from meshkit.api.v3electionpb import v3election_pb2 as epb
from meshkit.api.v3lockpb import v3lock_pb2 as lpb
from meshkit.api.v3lockpb import v3lock_pb2_grpc as lrpc
from meshkit.server.embed import EmbeddedServer
from meshkit.server.h2grpc import GrpcServer
from meshkit.server.h2grpc.connection import Connection
from tests.server import h2client as hc
from tests.server.h2client import Frame, H2Client

RANGE = "/etcdserverpb.KV/Range"
PUT = "/etcdserverpb.KV/Put"
TXN = "/etcdserverpb.KV/Txn"
WATCH = "/etcdserverpb.Watch/Watch"
LOCK = "/v3lockpb.Lock/Lock"
OBSERVE = "/v3electionpb.Election/Observe"

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(os.environ.get("MESHKIT_GRPC_SERVER") == "grpcio",
                       reason="tests of the native gRPC server (MESHKIT_GRPC_SERVER=grpcio)"),
]


@pytest.fixture
async def member(tmp_path: Path) -> AsyncIterator[EmbeddedServer]:
    async with EmbeddedServer.for_test(tmp_path / "d", 0) as srv:
        assert isinstance(srv._grpc, GrpcServer), "these tests are for the native server"
        yield srv


def native(srv: EmbeddedServer) -> GrpcServer:
    assert isinstance(srv._grpc, GrpcServer)
    return srv._grpc


def only_connection(srv: EmbeddedServer) -> Connection:
    (conn,) = native(srv).connections
    return conn


def put(key: bytes, value: bytes = b"v") -> bytes:
    return pb.PutRequest(key=key, value=value).SerializeToString()


def range_of(key: bytes, range_end: bytes = b"") -> bytes:
    return pb.RangeRequest(key=key, range_end=range_end).SerializeToString()


async def fill(srv: EmbeddedServer, prefix: bytes, n: int, size: int) -> None:
    """n keys ``prefix%04d`` of ``size`` bytes each (txns of 100 puts)."""
    async with grpc.aio.insecure_channel(srv.endpoint) as ch:
        kv = rpc.KVStub(ch)
        for start in range(0, n, 100):
            ops = [pb.RequestOp(request_put=pb.PutRequest(key=prefix + b"%04d" % i, value=bytes([65 + i % 26]) * size))
                   for i in range(start, min(n, start + 100))]
            await kv.Txn(pb.TxnRequest(success=ops))


async def settle(cond: object, limit: float = 5.0) -> None:
    """Until ``cond()`` holds (server-side state that changes in the loop)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not cond():  # type: ignore[operator]
        assert loop.time() < deadline, "server state did not settle"
        await asyncio.sleep(0.01)


async def drip(c: H2Client, step: int, done: Callable[[], bool]) -> None:
    """Open the connection window ``step`` bytes at a time, each once the server
    has used the last, until ``done()``."""
    for _ in range(1000):
        if done():
            return
        target = c.window.conn_used + step
        c.grant(step)

        def used(target: int = target) -> bool:
            return done() or c.window.conn_used == target

        await c.wait_for(used)
    raise AssertionError("never done")


def stream_frames(c: H2Client, sid: int) -> list[Frame]:
    return [f for f in c.received if f.sid == sid]


# ---------------------------------------------------------------- unary calls


async def test_unary_round_trip_frames(member: EmbeddedServer) -> None:
    c = await H2Client.connect(member.ports[0])
    try:
        call = await c.call(PUT, put(b"k", b"v1"))
        # HEADERS(:status 200, content-type) + DATA(one message) + HEADERS(trailers, END_STREAM)
        frames = stream_frames(c, call.sid)
        assert [(f.type, f.flags) for f in frames] == [
            (hc.HEADERS, hc.END_HEADERS), (hc.DATA, 0), (hc.HEADERS, hc.END_HEADERS | hc.END_STREAM)]
        assert call.headers == {b":status": b"200", b"content-type": b"application/grpc"}
        assert call.trailers == {b"grpc-status": b"0"}
        (msg,) = call.messages()
        assert pb.PutResponse.FromString(msg).header.revision == 2

        call = await c.call(RANGE, range_of(b"k"))
        assert call.code == 0
        (msg,) = call.messages()
        r = pb.RangeResponse.FromString(msg)
        assert [(kv.key, kv.value) for kv in r.kvs] == [(b"k", b"v1")] and r.count == 1
        # a server-side error: trailers-only (grpc-status in the one HEADERS frame)
        call = await c.call(PUT, put(b""))
        assert [(f.type, f.flags) for f in stream_frames(c, call.sid)] == [
            (hc.HEADERS, hc.END_HEADERS | hc.END_STREAM)]
        assert (call.code, call.message) == (grpc.StatusCode.INVALID_ARGUMENT.value[0],
                                             "etcdserver: key is not provided")
        assert call.headers is not None and call.headers[b":status"] == b"200"
        assert only_connection(member).streams == {}
    finally:
        await c.close()


async def test_token_metadata_reaches_auth(member: EmbeddedServer) -> None:
    async with grpc.aio.insecure_channel(member.endpoint) as ch:
        auth = rpc.AuthStub(ch)
        await auth.UserAdd(pb.AuthUserAddRequest(name="root", password="pw"))
        await auth.UserGrantRole(pb.AuthUserGrantRoleRequest(user="root", role="root"))
        await auth.AuthEnable(pb.AuthEnableRequest())
        token = (await auth.Authenticate(pb.AuthenticateRequest(name="root", password="pw"))).token
    c = await H2Client.connect(member.ports[0])
    try:
        bad = await c.call(RANGE, range_of(b"k"), metadata=[("token", "nope")])
        assert (bad.code, bad.message) == (grpc.StatusCode.UNAUTHENTICATED.value[0],
                                           "etcdserver: invalid auth token")
        anonymous = await c.call(PUT, put(b"k"))
        assert (anonymous.code, anonymous.message) == (grpc.StatusCode.INVALID_ARGUMENT.value[0],
                                                       "etcdserver: user name is empty")
        good = await c.call(PUT, put(b"k"), metadata=[("token", token)])
        assert good.code == 0
    finally:
        await c.close()


# ---------------------------------------------------------------- flow control


async def test_small_windows_are_never_exceeded(member: EmbeddedServer) -> None:
    await fill(member, b"big/", 300, 1024)
    # stream windows of 1000 bytes; the connection window stays at 65535
    c = await H2Client.connect(member.ports[0], {hc.SETTINGS_INITIAL_WINDOW_SIZE: 1000})
    try:
        sid = c.start(RANGE, range_of(b"big/", b"big0"))
        call = c.calls[sid]
        await c.wait_for(lambda: c.window.stream_used.get(sid, 0) == 1000)
        assert not await c.quiet(0.2), "sent beyond the stream window"
        # the stream window opens wide: the connection window (65535) binds
        c.grant(1 << 20, sid)
        await c.wait_for(lambda: c.window.conn_used == hc.DEFAULT_WINDOW)
        assert not await c.quiet(0.2), "sent beyond the connection window"
        # the connection window opens slowly, 20000 bytes at a time
        await drip(c, 20_000, lambda: call.ended)
        assert call.code == 0
        (msg,) = call.messages()
        r = pb.RangeResponse.FromString(msg)
        assert len(msg) > 300_000 and r.count == 300
        assert [kv.key for kv in r.kvs] == [b"big/%04d" % i for i in range(300)]
        assert all(kv.value == bytes([65 + i % 26]) * 1024 for i, kv in enumerate(r.kvs))
        assert c.window.largest_frame <= hc.DEFAULT_MAX_FRAME
        # the same connection still serves (its windows are consistent)
        c.grant(1 << 20)
        sid = c.start(RANGE, range_of(b"big/0001"))
        c.grant(10_000, sid)  # a 1 KiB value does not fit the 1000-byte stream window
        assert (await c.finish(sid)).code == 0
        assert only_connection(member).streams == {}
    finally:
        await c.close()


@pytest.mark.parametrize("max_frame", [hc.DEFAULT_MAX_FRAME, 40_000])
async def test_max_frame_size_is_respected(member: EmbeddedServer, max_frame: int) -> None:
    await fill(member, b"f/", 100, 1024)
    c = await H2Client.connect(member.ports[0], {hc.SETTINGS_MAX_FRAME_SIZE: max_frame,
                                                 hc.SETTINGS_INITIAL_WINDOW_SIZE: 1 << 20})
    try:
        c.grant(1 << 20)
        # one response of ~100 KiB, and one just above a frame (the unary fast path)
        for key, end in ((b"f/", b"f0"), (b"f/0000", b"f/0016")):
            call = await c.call(RANGE, range_of(key, end))
            assert call.code == 0
            assert pb.RangeResponse.FromString(call.messages()[0]).kvs
        assert c.window.largest_frame == max_frame  # frames as large as allowed, no larger
    finally:
        await c.close()


# ---------------------------------------------------------------- framing


def split_headers(sizes: list[int]) -> hc.Rewrite:
    """Each HEADERS block cut into HEADERS + CONTINUATION frames of ``sizes`` bytes."""

    def rewrite(frames: list[Frame]) -> list[Frame]:
        out = []
        for fr in frames:
            if fr.type != hc.HEADERS:
                out.append(fr)
                continue
            assert fr.flags & hc.END_HEADERS and not fr.flags & (hc.PADDED | hc.PRIORITY_FLAG)
            block, parts = fr.payload, []
            for n in sizes:
                parts.append(block[:n])
                block = block[n:]
            parts.append(block)
            out.append(Frame(hc.HEADERS, fr.flags & hc.END_STREAM, fr.sid, parts[0]))
            out += [Frame(hc.CONTINUATION, hc.END_HEADERS if i == len(parts) - 1 else 0, fr.sid, p)
                    for i, p in enumerate(parts[1:], 1)]
        return out

    return rewrite


def pad_headers(pad: int, priority: bool) -> hc.Rewrite:
    """HEADERS frames PADDED (``pad`` bytes), with the PRIORITY fields if asked."""

    def rewrite(frames: list[Frame]) -> list[Frame]:
        out = []
        for fr in frames:
            if fr.type == hc.HEADERS:
                prio = b"\x00\x00\x00\x00\x0f" if priority else b""
                flags = fr.flags | hc.PADDED | (hc.PRIORITY_FLAG if priority else 0)
                fr = Frame(fr.type, flags, fr.sid, bytes((pad,)) + prio + fr.payload + b"\x00" * pad)
            out.append(fr)
        return out

    return rewrite


async def test_headers_split_into_continuation_frames(member: EmbeddedServer) -> None:
    c = await H2Client.connect(member.ports[0])
    try:
        # cut inside HPACK fields: a few bytes at a time
        sid = c.start(PUT, put(b"cont", b"1"), rewrite=split_headers([1, 3, 7, 2]))
        assert [f.type for f in c.sent if f.sid == sid][:5] == [hc.HEADERS] + [hc.CONTINUATION] * 4
        assert (await c.finish(sid)).code == 0
        # metadata larger than a frame: h2 itself writes HEADERS + CONTINUATION
        sid = c.start(RANGE, range_of(b"cont"), metadata=[("x-big", "y" * 20_000)])
        assert [f.type for f in c.sent if f.sid == sid][:2] == [hc.HEADERS, hc.CONTINUATION]
        call = await c.finish(sid)
        assert call.code == 0
        assert pb.RangeResponse.FromString(call.messages()[0]).kvs[0].value == b"1"
    finally:
        await c.close()


@pytest.mark.parametrize("priority", [False, True])
async def test_padded_headers_and_data(member: EmbeddedServer, priority: bool) -> None:
    c = await H2Client.connect(member.ports[0])
    try:
        sid = c.start(PUT, put(b"pad", b"padded"), pad=17, rewrite=pad_headers(9, priority))
        mine = [f for f in c.sent if f.sid == sid]
        assert mine[0].type == hc.HEADERS and mine[0].flags & hc.PADDED
        assert bool(mine[0].flags & hc.PRIORITY_FLAG) == priority
        assert mine[1].type == hc.DATA and mine[1].flags & hc.PADDED
        assert (await c.finish(sid)).code == 0
        # h2's own PRIORITY flag on HEADERS, and a PRIORITY frame on an open stream
        sid = c.start(WATCH, None, end=False, priority=True)
        assert c.sent[-1].flags & hc.PRIORITY_FLAG
        c.conn.prioritize(sid, weight=200)
        c.flush()
        assert c.sent[-1].type == hc.PRIORITY
        c.send_message(sid, pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"pad")).SerializeToString(),
                       pad=3)
        await c.wait_for(lambda: len(c.calls[sid].messages()) == 1)
        assert pb.WatchResponse.FromString(c.calls[sid].messages()[0]).created
        call = await c.call(RANGE, range_of(b"pad"))
        assert pb.RangeResponse.FromString(call.messages()[0]).kvs[0].value == b"padded"
    finally:
        await c.close()


async def test_padding_is_given_back_to_the_stream_window(member: EmbeddedServer) -> None:
    """Padding counts against flow control; the server must give it back, or a
    long-lived request stream that pads stalls once a window of padding went by."""
    c = await H2Client.connect(member.ports[0])
    try:
        sid = c.start(WATCH, None, end=False)
        server_window = c.conn.local_flow_control_window(sid)
        batch = 1000  # empty DATA frames of 255 bytes of padding: 256 flow-controlled bytes each
        for _ in range(2 * server_window // (256 * batch) + 1):
            await c.wait_for(lambda: c.conn.local_flow_control_window(sid) >= 256 * batch, limit=5)
            for _ in range(batch):
                c.conn.send_data(sid, b"", pad_length=255)
            c.flush()
        progress = pb.WatchRequest(progress_request=pb.WatchProgressRequest()).SerializeToString()
        c.send_message(sid, progress, pad=255)
        await c.wait_for(lambda: len(c.calls[sid].body) > 0)
        assert pb.WatchResponse.FromString(c.calls[sid].messages()[0]).watch_id == -1
    finally:
        await c.close()


async def test_ping_and_settings_are_acknowledged(member: EmbeddedServer) -> None:
    c = await H2Client.connect(member.ports[0])
    try:
        c.conn.ping(b"8 bytes!")
        c.flush()
        await c.wait_for(lambda: any(f.type == hc.PING for f in c.received))
        (pong,) = [f for f in c.received if f.type == hc.PING]
        assert (pong.flags, pong.sid, pong.payload) == (hc.ACK, 0, b"8 bytes!")
        acks = sum(1 for f in c.received if f.type == hc.SETTINGS and f.flags & hc.ACK)
        c.conn.update_settings({hc.SETTINGS_INITIAL_WINDOW_SIZE: 100_000})
        c.flush()
        await c.wait_for(lambda: sum(1 for f in c.received if f.type == hc.SETTINGS and f.flags & hc.ACK)
                         == acks + 1)
        # an empty SETTINGS is acknowledged too
        c.send_raw(hc.frame(hc.SETTINGS, 0, 0))
        await c.wait_for(lambda: sum(1 for f in c.received if f.type == hc.SETTINGS and f.flags & hc.ACK)
                         == acks + 2)
        assert (await c.call(PUT, put(b"after", b"settings"))).code == 0
    finally:
        await c.close()


# ---------------------------------------------------------------- cancellation and deadlines


def watch_create(key: bytes) -> bytes:
    return pb.WatchRequest(create_request=pb.WatchCreateRequest(key=key)).SerializeToString()


async def test_rst_stream_cancels_a_watch(member: EmbeddedServer) -> None:
    watchable = member.etcd.watchable
    c = await H2Client.connect(member.ports[0])
    try:
        sid = c.start(WATCH, watch_create(b"w"), end=False)
        await c.wait_for(lambda: len(c.calls[sid].body) > 0)
        assert pb.WatchResponse.FromString(c.calls[sid].messages()[0]).created
        conn = only_connection(member)
        task = conn.streams[sid].task
        assert task is not None and len(watchable._streams) == 1
        seen = len(c.calls[sid].body)
        c.conn.reset_stream(sid, error_code=8)  # CANCEL
        c.flush()
        await settle(lambda: not watchable._streams and task.done())
        assert conn.streams == {}
        # no answer to a reset stream, no event for its watch, and the connection goes on
        assert await c.quiet(0.1) == []
        call = await c.call(PUT, put(b"w", b"after"))
        assert call.code == 0
        assert len(c.calls[sid].body) == seen and c.calls[sid].trailers is None
    finally:
        await c.close()


async def test_closed_connection_cancels_its_calls(member: EmbeddedServer) -> None:
    watchable = member.etcd.watchable
    c = await H2Client.connect(member.ports[0])
    sid = c.start(WATCH, watch_create(b"w"), end=False)
    await c.wait_for(lambda: len(c.calls[sid].body) > 0)
    task = only_connection(member).streams[sid].task
    assert task is not None
    await c.close()
    await settle(lambda: not watchable._streams and task.done() and not native(member).connections)


async def held_lock(srv: EmbeddedServer) -> bytes:
    async with grpc.aio.insecure_channel(srv.endpoint) as ch:
        held = await lrpc.LockStub(ch).Lock(lpb.LockRequest(name=b"mutex"))
    return held.key


@pytest.mark.parametrize("how", ["raw", "grpcio"])
async def test_grpc_timeout_ends_a_blocked_lock(member: EmbeddedServer, how: str) -> None:
    await held_lock(member)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    if how == "raw":
        c = await H2Client.connect(member.ports[0])
        try:
            call = await c.call(LOCK, lpb.LockRequest(name=b"mutex").SerializeToString(), grpc_timeout="300m")
            # etcd's answer: grpc-go cancels the handler's context, the handler
            # returns ctx.Err(), sent as UNKNOWN (tests/compat/test_grpc_errors.py)
            assert (call.code, call.message) == (grpc.StatusCode.UNKNOWN.value[0], "context deadline exceeded")
            assert call.headers is not None and call.trailers is None  # trailers-only
            assert only_connection(member).streams == {}
        finally:
            await c.close()
    else:
        async with grpc.aio.insecure_channel(member.endpoint) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await lrpc.LockStub(ch).Lock(lpb.LockRequest(name=b"mutex"), timeout=0.3)
            # the client's deadline and the server's fire together: either answer
            assert (ei.value.code(), ei.value.details()) in {
                (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"),
                (grpc.StatusCode.UNKNOWN, "context deadline exceeded")}
    assert 0.25 <= loop.time() - t0 < 3
    # the waiter's key went away with its call: only the holder is left
    async with grpc.aio.insecure_channel(member.endpoint) as ch:
        for _ in range(100):
            r = await rpc.KVStub(ch).Range(pb.RangeRequest(key=b"mutex/", range_end=b"mutex0"))
            if r.count == 1:
                break
            await asyncio.sleep(0.02)
        assert r.count == 1


async def test_grpc_timeout_ends_a_streaming_observe(member: EmbeddedServer) -> None:
    c = await H2Client.connect(member.ports[0])
    try:
        call = await c.call(OBSERVE, epb.LeaderRequest(name=b"nobody").SerializeToString(), grpc_timeout="200m")
        assert (call.code, call.message) == (grpc.StatusCode.UNKNOWN.value[0], "context deadline exceeded")
        assert call.body == b""
        assert only_connection(member).streams == {}
    finally:
        await c.close()


# ---------------------------------------------------------------- compression


@pytest.mark.parametrize("compression", [grpc.Compression.Gzip, grpc.Compression.Deflate])
async def test_compressed_requests_are_refused_as_etcd(member: EmbeddedServer,
                                                       compression: grpc.Compression) -> None:
    """etcd 3.4 has no decompressor: a compressed call is UNIMPLEMENTED and
    nothing is stored (side by side with etcd: tests/compat/test_grpc_errors.py)."""
    name = "gzip" if compression == grpc.Compression.Gzip else "deflate"
    async with grpc.aio.insecure_channel(member.endpoint, compression=compression) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await rpc.KVStub(ch).Put(pb.PutRequest(key=b"z", value=b"compressible " * 1000))
        assert (ei.value.code(), ei.value.details()) == (
            grpc.StatusCode.UNIMPLEMENTED, f'grpc: Decompressor is not installed for grpc-encoding "{name}"')
    async with grpc.aio.insecure_channel(member.endpoint) as ch:
        assert (await rpc.KVStub(ch).Range(pb.RangeRequest(key=b"z"))).count == 0


async def test_bad_compressed_messages(member: EmbeddedServer) -> None:
    c = await H2Client.connect(member.ports[0])
    try:
        packed = zlib.compress(put(b"k"), wbits=31)  # gzip
        cases = [  # (grpc-encoding, compressed flag, bytes) -> (code, message)
            ("gzip", 1, packed, (12, 'grpc: Decompressor is not installed for grpc-encoding "gzip"')),
            ("gzip", 0, put(b"k"), (12, 'grpc: Decompressor is not installed for grpc-encoding "gzip"')),
            ("br", 1, packed, (12, 'grpc: Decompressor is not installed for grpc-encoding "br"')),
            ("identity", 1, packed, (13, "grpc: compressed flag set with identity or empty encoding")),
            ("identity", 0, put(b"k"), (0, "")),
        ]
        for encoding, flag, body, expected in cases:
            sid = c.open_stream(c.request_headers(PUT, [("grpc-encoding", encoding)]))
            c.conn.send_data(sid, bytes((flag,)) + len(body).to_bytes(4, "big") + body, end_stream=True)
            c.flush()
            call = await c.finish(sid)
            assert (call.code, call.message) == expected, (encoding, flag)
    finally:
        await c.close()


# ---------------------------------------------------------------- malformed requests


async def test_oversized_message_is_answered_from_its_prefix(member: EmbeddedServer) -> None:
    limit = native(member).max_receive
    c = await H2Client.connect(member.ports[0])
    try:
        sid = c.start(PUT, None, end=False)
        # only the 5-byte prefix and a little of the message: the answer comes
        # at once, and the rest of the request is refused (RST_STREAM NO_ERROR)
        c.conn.send_data(sid, b"\x00" + (3 << 20).to_bytes(4, "big") + bytes(1000))
        c.flush()
        call = await c.finish(sid)
        assert (call.code, call.message) == (grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
                                             f"grpc: received message larger than max ({3 << 20} vs. {limit})")
        await c.wait_for(lambda: any(f.type == hc.RST_STREAM for f in stream_frames(c, sid)))
        (rst,) = [f for f in stream_frames(c, sid) if f.type == hc.RST_STREAM]
        assert rst.payload == bytes(4)
        assert (await c.call(PUT, put(b"k"))).code == 0
    finally:
        await c.close()


async def test_unknown_methods_and_malformed_requests(member: EmbeddedServer) -> None:
    c = await H2Client.connect(member.ports[0])
    try:
        # grpc-go's answers (tests/compat/test_grpc_errors.py has them side by side with etcd)
        for path, expected in [
            ("/etcdserverpb.KV/Nope", (12, "unknown method Nope for service etcdserverpb.KV")),
            ("/etcdserverpb.Watch/Nope", (12, "unknown method Nope for service etcdserverpb.Watch")),
            ("/etcdserverpb.Nope/Range", (12, "unknown service etcdserverpb.Nope")),
            ("//etcdserverpb.KV/Range", (12, "unknown service /etcdserverpb.KV")),
            ("/nope", (8, 'malformed method name: "/nope"')),
        ]:
            # with the request still open: answered, then the rest of it refused
            sid = c.start(path, put(b"k"), end=False)
            call = await c.finish(sid)
            assert (call.code, call.message) == expected
            assert [f.type for f in stream_frames(c, sid)] == [hc.HEADERS, hc.RST_STREAM]
        # not gRPC, or a deadline that is not one: the stream is reset
        for headers in (
            [h for h in c.request_headers(RANGE) if h[0] != "content-type"],
            [h for h in c.request_headers(RANGE) if h[0] != "content-type"] + [("content-type", "text/plain")],
            c.request_headers(RANGE, grpc_timeout="1x"),
            c.request_headers(RANGE, grpc_timeout="123456789S"),
        ):
            sid = c.open_stream(headers)
            c.send_message(sid, range_of(b"k"), end=True)
            call = await c.finish(sid)
            assert call.reset == 1 and call.headers is None  # PROTOCOL_ERROR
        # "application/grpc+proto" is gRPC
        sid = c.open_stream([h for h in c.request_headers(RANGE) if h[0] != "content-type"]
                            + [("content-type", "application/grpc+proto")])
        c.send_message(sid, range_of(b"k"), end=True)
        assert (await c.finish(sid)).code == 0
        assert only_connection(member).streams == {}
    finally:
        await c.close()


# ---------------------------------------------------------------- protocol errors

PROTOCOL_ERROR, FRAME_SIZE_ERROR, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x1, 0x6, 0x9, 0xB

BAD_FRAMES = [
    ("DATA on stream 0", hc.frame(hc.DATA, 0, 0, b"x"), PROTOCOL_ERROR),
    ("a frame over 16384 bytes", hc.frame(hc.DATA, 0, 1, bytes(16_385)), FRAME_SIZE_ERROR),
    ("HEADERS on an even stream", hc.frame(hc.HEADERS, hc.END_HEADERS, 2, b"\x83\x86"), PROTOCOL_ERROR),
    ("HEADERS on stream 0", hc.frame(hc.HEADERS, hc.END_HEADERS, 0, b"\x83\x86"), PROTOCOL_ERROR),
    ("DATA on an idle stream", hc.frame(hc.DATA, 0, 7, b"x"), PROTOCOL_ERROR),
    ("a PING of 7 bytes", hc.frame(hc.PING, 0, 0, b"1234567"), FRAME_SIZE_ERROR),
    ("a PING on a stream", hc.frame(hc.PING, 0, 1, b"12345678"), PROTOCOL_ERROR),
    ("CONTINUATION without HEADERS", hc.frame(hc.CONTINUATION, hc.END_HEADERS, 1, b"\x83"), PROTOCOL_ERROR),
    ("HEADERS then DATA before its CONTINUATION",
     hc.frame(hc.HEADERS, 0, 1, b"\x83") + hc.frame(hc.DATA, 0, 1, b"x"), PROTOCOL_ERROR),
    ("a connection WINDOW_UPDATE of 0", hc.frame(hc.WINDOW_UPDATE, 0, 0, bytes(4)), PROTOCOL_ERROR),
    ("a connection window over 2^31-1",
     hc.frame(hc.WINDOW_UPDATE, 0, 0, (2**31 - 1).to_bytes(4, "big")), 0x3),
    ("a bad HPACK block", hc.frame(hc.HEADERS, hc.END_HEADERS | hc.END_STREAM, 1, b"\xff\xff\xff\xff"),
     COMPRESSION_ERROR),
    ("SETTINGS on a stream", hc.frame(hc.SETTINGS, 0, 1), PROTOCOL_ERROR),
    ("SETTINGS of 5 bytes", hc.frame(hc.SETTINGS, 0, 0, bytes(5)), FRAME_SIZE_ERROR),
    ("a max frame size below 16384", hc.frame(hc.SETTINGS, 0, 0, b"\x00\x05" + (100).to_bytes(4, "big")),
     PROTOCOL_ERROR),
    ("PUSH_PROMISE from a client", hc.frame(hc.PUSH_PROMISE, hc.END_HEADERS, 1, bytes(4)), PROTOCOL_ERROR),
    ("padding longer than the frame", hc.frame(hc.HEADERS, hc.END_HEADERS | hc.PADDED, 1, b"\x09\x83"),
     PROTOCOL_ERROR),
    ("endless CONTINUATION frames",
     hc.frame(hc.HEADERS, 0, 1, b"\x83") + hc.frame(hc.CONTINUATION, 0, 1, bytes(16_384)) * 70, ENHANCE_YOUR_CALM),
]


async def test_protocol_errors_end_the_connection_only(member: EmbeddedServer) -> None:
    port = member.ports[0]
    for name, raw, code in BAD_FRAMES:
        c = await H2Client.connect(port)
        try:
            c.send_raw(raw, raw_only=True)
            await c.wait_for(lambda: c.eof, limit=5)  # noqa: B023
            goaway = c.goaways()
            assert len(goaway) == 1 and goaway[0][:2] == (0, code), (name, goaway)
        finally:
            await c.close()
        await settle(lambda: not native(member).connections)
    # the server kept serving
    c = await H2Client.connect(port)
    try:
        assert (await c.call(PUT, put(b"still", b"serving"))).code == 0
    finally:
        await c.close()


async def test_goaway_names_the_last_stream(member: EmbeddedServer) -> None:
    c = await H2Client.connect(member.ports[0])
    try:
        for _ in range(3):
            assert (await c.call(PUT, put(b"k"))).code == 0
        c.send_raw(hc.frame(hc.DATA, 0, 0, b"x"), raw_only=True)
        await c.wait_for(lambda: c.eof, limit=5)
        assert [g[:2] for g in c.goaways()] == [(5, PROTOCOL_ERROR)]
    finally:
        await c.close()


# ---------------------------------------------------------------- graceful stop


def other_tasks() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def test_graceful_stop(tmp_path: Path) -> None:
    before = other_tasks()
    srv = EmbeddedServer.for_test(tmp_path / "d", 0)
    await srv.start()
    closing: asyncio.Task[None] | None = None
    try:
        holder = await held_lock(srv)
        c = await H2Client.connect(srv.ports[0])
        lock = c.start(LOCK, lpb.LockRequest(name=b"mutex").SerializeToString())
        watch = c.start(WATCH, watch_create(b"w"), end=False)
        await c.wait_for(lambda: len(c.calls[watch].body) > 0)
        watchable = srv.etcd.watchable
        assert len(watchable._streams) == 1 and len(only_connection(srv).streams) == 2

        closing = asyncio.create_task(srv.close(grace=1.0))
        await c.wait_for(lambda: c.goaway is not None, limit=5)
        assert c.goaways() == [(watch, 0, b"")]  # NO_ERROR, no stream beyond the watch
        assert not closing.done()
        # a pending call ends normally within the grace period
        await srv.etcd.propose(ipb.InternalRequest(delete_range=pb.DeleteRangeRequest(key=holder)))
        call = await c.finish(lock, limit=5)
        assert call.code == 0 and lpb.LockResponse.FromString(call.messages()[0]).key.startswith(b"mutex/")
        # the watch stream ends with the grace period: the connection is closed
        await c.wait_for(lambda: c.eof, limit=5)
        assert not c.calls[watch].ended
        await asyncio.wait_for(closing, 10)
        assert not watchable._streams
        await c.close()
    finally:
        await (closing if closing is not None else srv.close())
    await settle(lambda: other_tasks() <= before)


async def test_stop_refuses_new_streams(tmp_path: Path) -> None:
    srv = EmbeddedServer.for_test(tmp_path / "d", 0)
    await srv.start()
    closing: asyncio.Task[None] | None = None
    try:
        c = await H2Client.connect(srv.ports[0])
        watch = c.start(WATCH, watch_create(b"w"), end=False)
        await c.wait_for(lambda: len(c.calls[watch].body) > 0)
        closing = asyncio.create_task(srv.close(grace=1.0))
        await c.wait_for(lambda: c.goaway is not None, limit=5)
        # a stream the client opened before it saw the GOAWAY is refused (h2
        # would not open one after it: sent raw, with h2's HPACK state)
        block = c.conn.encoder.encode(c.request_headers(RANGE))
        c.send_raw(hc.frame(hc.HEADERS, hc.END_HEADERS, watch + 2, block)
                   + hc.frame(hc.DATA, hc.END_STREAM, watch + 2, hc.grpc_message(range_of(b"k"))),
                   raw_only=True)
        await c.wait_for(lambda: any(f.type == hc.RST_STREAM and f.sid == watch + 2 for f in c.received))
        (rst,) = [f for f in c.received if f.type == hc.RST_STREAM]
        assert rst.payload == (7).to_bytes(4, "big")  # REFUSED_STREAM: safe to retry elsewhere
        await asyncio.wait_for(closing, 10)
        await c.close()
    finally:
        await (closing if closing is not None else srv.close())


# ---------------------------------------------------------------- many streams


async def test_many_concurrent_calls_on_one_connection(member: EmbeddedServer) -> None:
    async with grpc.aio.insecure_channel(member.endpoint) as ch:
        kv = rpc.KVStub(ch)
        await kv.Range(pb.RangeRequest(key=b"warm"))
        answers = await asyncio.gather(*(kv.Put(pb.PutRequest(key=b"p/%03d" % i, value=b"%d" % i))
                                         for i in range(200)))
        assert len(native(member).connections) == 1  # one channel, one connection
        # every put answered once, each with its own revision
        assert sorted(a.header.revision for a in answers) == list(range(2, 202))
        r = await kv.Range(pb.RangeRequest(key=b"p/", range_end=b"p0"))
        assert [(kv.key, kv.value) for kv in r.kvs] == [(b"p/%03d" % i, b"%d" % i) for i in range(200)]
        # and as many reads of distinct keys, each with the right answer
        reads = await asyncio.gather(*(kv.Range(pb.RangeRequest(key=b"p/%03d" % i)) for i in range(200)))
        assert [r.kvs[0].value for r in reads] == [b"%d" % i for i in range(200)]
    assert not any(c.streams for c in native(member).connections)


async def test_large_responses_on_two_streams_interleave(member: EmbeddedServer) -> None:
    await fill(member, b"a/", 300, 1024)
    await fill(member, b"b/", 300, 1024)
    # stream windows wide open: only the connection window (65535) limits
    c = await H2Client.connect(member.ports[0], {hc.SETTINGS_INITIAL_WINDOW_SIZE: 1 << 24})
    try:
        a = c.start(RANGE, range_of(b"a/", b"a0"))
        b = c.start(RANGE, range_of(b"b/", b"b0"))
        await c.wait_for(lambda: c.window.conn_used == hc.DEFAULT_WINDOW)
        await drip(c, 32_768, lambda: c.calls[a].ended and c.calls[b].ended)
        for sid, prefix in ((a, b"a/"), (b, b"b/")):
            call = c.calls[sid]
            assert call.code == 0
            r = pb.RangeResponse.FromString(call.messages()[0])
            assert [kv.key for kv in r.kvs] == [prefix + b"%04d" % i for i in range(300)]
        # both streams progressed together: neither waited for the other to finish
        order = [f.sid for f in c.received if f.type == hc.DATA]
        first_end = min(max(i for i, s in enumerate(order) if s == sid) for sid in (a, b))
        assert {a, b} <= set(order[: first_end // 2]), "one response starved the other"
    finally:
        await c.close()
