"""The native gRPC server (meshkit.server.h2grpc) alone, with test handlers:
what etcd's servicers never do (requests left unread, handlers that raise or
abort with metadata) and flow-control corners. Served on 127.0.0.1 without
the client-port mux; the HTTP/2 client is tests/server/h2client.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from meshkit.server.h2grpc import GrpcServer
from meshkit.server.h2grpc.connection import STREAM_WINDOW
from tests.server import h2client as hc
from tests.server.h2client import H2Client

pytestmark = pytest.mark.timeout(30)

MAX_MESSAGE = 1 << 20


async def _never(requests: Any, context: grpc.aio.ServicerContext) -> bytes:
    await asyncio.Event().wait()  # reads no request
    return b""


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def _boom(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise ValueError("boom")


async def _abort(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await context.abort(grpc.StatusCode.NOT_FOUND, "gone: 100% ü",
                        trailing_metadata=(("x-why", "because"), ("x-raw-bin", b"\x00\x01")))
    raise AssertionError("abort returned")


HANDLERS = {
    "Never": grpc.stream_unary_rpc_method_handler(_never),
    "Echo": grpc.unary_unary_rpc_method_handler(_echo),
    "Boom": grpc.unary_unary_rpc_method_handler(_boom),
    "Abort": grpc.unary_unary_rpc_method_handler(_abort),
}


@pytest.fixture
async def port() -> AsyncIterator[int]:
    server = GrpcServer(max_receive_message_length=MAX_MESSAGE)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.T", HANDLERS)])
    listener = await asyncio.get_running_loop().create_server(server.protocol_factory, "127.0.0.1", 0)
    try:
        yield int(listener.sockets[0].getsockname()[1])
    finally:
        listener.close()
        await server.stop(0)
        await listener.wait_closed()


async def test_a_client_beyond_the_stream_window_is_reset(port: int) -> None:
    c = await H2Client.connect(port)
    try:
        sid = c.start("/test.T/Never", None, end=False)
        # whole messages, never read by the handler, past the window the
        # server gave the stream (h2 would refuse to send them: raw frames)
        chunk = hc.grpc_message(bytes(hc.DEFAULT_MAX_FRAME - 5))
        frames = STREAM_WINDOW // len(chunk) + 1
        c.send_raw(hc.frame(hc.DATA, 0, sid, chunk) * frames, raw_only=True)
        call = await c.finish(sid)
        assert call.reset == 0x3 and call.headers is None  # RST_STREAM FLOW_CONTROL_ERROR
        assert c.goaways() == []
        # the connection goes on
        echo = await c.call("/test.T/Echo", b"still here")
        assert echo.code == 0 and echo.messages() == [b"still here"]
    finally:
        await c.close()


async def test_handler_errors_and_trailing_metadata(port: int) -> None:
    c = await H2Client.connect(port)
    try:
        boom = await c.call("/test.T/Boom", b"")
        assert (boom.code, boom.message) == (2, "Unexpected <class 'ValueError'>: boom")  # grpc.aio's text
        abort = await c.call("/test.T/Abort", b"")
        assert abort.status == {
            b":status": b"200", b"content-type": b"application/grpc", b"grpc-status": b"5",
            b"grpc-message": b"gone: 100%25 %C3%BC",  # percent-encoded (gRPC's spec)
            b"x-why": b"because", b"x-raw-bin": b"AAE",  # -bin values base64, unpadded
        }
    finally:
        await c.close()


async def test_a_smaller_initial_window_mid_response(port: int) -> None:
    """SETTINGS_INITIAL_WINDOW_SIZE applies to open streams, and may leave a
    stream window negative (RFC 9113 6.9.2): the server waits until it is back."""
    c = await H2Client.connect(port)
    try:
        c.grant(1 << 20)
        sid = c.start("/test.T/Echo", bytes(200_000))
        await c.wait_for(lambda: c.window.stream_used.get(sid) == hc.DEFAULT_WINDOW)
        c.conn.update_settings({hc.SETTINGS_INITIAL_WINDOW_SIZE: 1000})
        c.flush()
        # (the server reads the SETTINGS before the WINDOW_UPDATE behind it)
        # the stream window is now 1000 - 65535 < 0: 70000 more make it 5465
        c.grant(70_000, sid)
        await c.wait_for(lambda: c.window.stream_used[sid] == hc.DEFAULT_WINDOW + 5465)
        assert not await c.quiet(0.2), "sent beyond the reduced window"
        c.grant(200_000, sid)
        call = await c.finish(sid)
        assert call.code == 0 and call.messages() == [bytes(200_000)]
    finally:
        await c.close()
