"""One client connection of the native gRPC server: HTTP/2 frames in, calls out.

An asyncio Protocol (no task per connection, none per frame): ``data_received``
parses whole frames out of its buffer, keeps HPACK and flow-control state,
and starts one task per call. Unary calls start when the request is complete;
calls with a request stream start at their headers and read messages as they
arrive. What the calls write is gathered and written once per loop iteration,
so the replies of a committed batch of writes leave in one ``send``.

Flow control: the receive windows are large and given back as bytes are used
(by the handler, for request streams), so a client never stalls on a unary call
and cannot make the server buffer more than a window per stream; sends respect
the client's connection and stream windows and wait for its WINDOW_UPDATEs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import struct
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import grpc

from meshkit.server.h2grpc import frames as f
from meshkit.server.h2grpc.context import RequestStream, ServicerContext
from meshkit.server.h2grpc.hpackdec import HeaderDecoder, HPACKError
from meshkit.server.h2grpc.keepalive import KeepalivePolicy, PingStrikes, keepalive_due

if TYPE_CHECKING:
    from meshkit.server.h2grpc.server import GrpcServer, Method

log = logging.getLogger("meshkit.server.grpc")

_HEAD = struct.Struct(">HBBBL")
# grpc-go's server limit on a request's decoded headers (etcd's)
MAX_HEADER_LIST = 16 << 20
# Our receive windows, a stream's and the connection's: given back as used
# (unary requests: as they arrive; request streams: as the handler reads).
STREAM_WINDOW = 1 << 22
CONNECTION_WINDOW = 1 << 24
# A header block arriving in CONTINUATION frames is kept until its end: bounded
# against endless ones (what it decodes to is bounded by MAX_HEADER_LIST).
MAX_HEADER_BLOCK = 1 << 20
# headers that are not call metadata (grpcio does not show them either)
_NOT_METADATA = frozenset((b"content-type", b"te", b"grpc-timeout", b"grpc-encoding",
                           b"grpc-accept-encoding", b"user-agent"))
_CODE_VALUES = {c: c.value[0] for c in grpc.StatusCode}


class Stream:
    """One call: its headers, its request bytes, its send window and its task."""

    __slots__ = (
        "_metadata",
        "buf",
        "cancelled",
        "client_ended",
        "conn",
        "ctx",
        "finished",
        "headers_sent",
        "id",
        "method",
        "pending",
        "queued",
        "raw_headers",
        "recv_window",
        "request",
        "requests",
        "send_window",
        "sent",
        "task",
        "timer",
        "unacked",
    )

    def __init__(self, conn: Connection, sid: int, method: Method, raw_headers: list[tuple[bytes, bytes]]) -> None:
        self.conn = conn
        self.id = sid
        self.method = method
        self.raw_headers = raw_headers
        self._metadata: tuple[tuple[str, str | bytes], ...] | None = None
        self.buf = bytearray()
        self.request: bytes | None = None  # a unary call's request message
        self.requests: RequestStream | None = None
        self.client_ended = False
        self.finished = False
        self.cancelled = False
        self.headers_sent = False
        self.send_window = conn.peer_window
        self.pending: memoryview | None = None  # DATA waiting for its turn and the windows
        self.queued = False  # in the connection's round of senders
        self.sent: asyncio.Future[None] | None = None  # done once ``pending`` is all written
        self.recv_window = STREAM_WINDOW  # what the client may still send us
        self.unacked = 0  # stream bytes used but not yet given back
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.ctx: ServicerContext

    @property
    def metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        md = self._metadata
        if md is None:
            out: list[tuple[str, str | bytes]] = []
            for k, v in self.raw_headers:
                if k[:1] == b":" or k in _NOT_METADATA:
                    continue
                key = k.decode("latin-1")
                if key.endswith("-bin"):
                    try:
                        out.append((key, base64.b64decode(v + b"=" * (-len(v) % 4))))
                    except (binascii.Error, ValueError):
                        continue
                else:
                    out.append((key, v.decode("utf-8", errors="replace")))
            md = self._metadata = tuple(out)
        return md

    # ---- receiving ------------------------------------------------------

    def on_data(self, data: bytes | bytearray) -> None:
        if self.requests is None:
            # A unary request is buffered whole (bounded by the message limit):
            # its window is given back as it arrives, so one larger than the
            # window cannot stall. Request streams give it back as they are read.
            self.consumed(len(data))
        buf = self.buf
        buf += data
        limit = self.conn.server.max_receive
        while len(buf) >= 5:
            size = int.from_bytes(buf[1:5], "big")
            if size > limit:
                self.finish(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"grpc: received message larger than max ({size} vs. {limit})")
                return
            if len(buf) < 5 + size:
                return
            if buf[0]:
                self.finish(grpc.StatusCode.INTERNAL, "grpc: compressed flag set with identity or empty encoding")
                return
            raw = bytes(buf[5 : 5 + size])
            del buf[: 5 + size]
            self._deliver(raw, 5 + size)

    def _deliver(self, raw: bytes, size: int) -> None:
        if self.requests is not None:
            try:
                msg = self.method.deserialize(raw)
            except Exception as e:
                self.finish(grpc.StatusCode.INTERNAL, f"grpc: error unmarshalling request: {e}")
                return
            self.requests.push(msg, size)
        elif self.request is None:
            self.request = raw
        # (grpc-go reads one request message of a unary call; more are ignored)

    def consumed(self, size: int) -> None:
        """A request's bytes were used: give them back to the stream's window."""
        if self.finished or self.client_ended:
            return
        self.unacked += size
        if self.unacked >= STREAM_WINDOW // 2:
            self.conn.write(f.window_update(self.id, self.unacked))
            self.recv_window += self.unacked
            self.unacked = 0

    def on_end(self) -> None:
        """The client half-closed."""
        self.client_ended = True
        if self.finished:
            return
        if self.buf:
            self.finish(grpc.StatusCode.INTERNAL, "grpc: the client ended the stream inside a message")
            return
        if self.requests is not None:
            self.requests.end()
        elif self.request is None:
            self.finish(grpc.StatusCode.INTERNAL, "grpc: the client sent no request message")
        else:
            self.conn.start_unary(self)

    # ---- sending --------------------------------------------------------

    def send_headers(self) -> None:
        if not self.headers_sent and not self.finished:
            self.headers_sent = True
            self.conn.pings.reset = True
            self.conn.write(f.frame(f.HEADERS, f.END_HEADERS, self.id, f.RESPONSE_HEADERS))

    def send_unary(self, payload: bytes) -> bool:
        """The whole answer of a unary call in one write, if the windows allow it."""
        conn = self.conn
        n = len(payload) + 5
        if n > self.send_window or n > conn.send_window or n > conn.peer_max_frame or self.headers_sent:
            return False
        self.send_window -= n
        conn.send_window -= n
        conn.pings.reset = True  # (grpc-go forgives ping strikes on every headers/data sent)
        sid = self.id.to_bytes(4, "big")
        conn.write(b"".join((
            len(f.RESPONSE_HEADERS).to_bytes(3, "big"), b"\x01\x04", sid, f.RESPONSE_HEADERS,
            n.to_bytes(3, "big"), b"\x00\x00", sid, b"\x00", len(payload).to_bytes(4, "big"), payload,
            len(f.STATUS_OK).to_bytes(3, "big"), b"\x01\x05", sid, f.STATUS_OK)))
        self._close(not self.client_ended)
        return True

    async def write_message(self, message: Any) -> None:
        if self.finished:
            raise asyncio.CancelledError  # the call is over (reset, deadline, shutdown)
        payload = message if isinstance(message, bytes) else self.method.serialize(message)
        self.send_headers()
        await self.send_data(b"\x00" + len(payload).to_bytes(4, "big") + payload)
        conn = self.conn
        if conn.paused:
            await conn.drain()

    async def send_data(self, data: bytes) -> None:
        """DATA frames as the client's windows allow, in turns with the other
        streams of the connection (see ``Connection.pump``)."""
        if self.finished:
            raise asyncio.CancelledError
        self.pending = memoryview(data)
        self.conn.pump(self)
        if self.pending is not None:
            self.sent = self.conn._loop.create_future()
            try:
                await self.sent  # cancelled when the call ends first
            finally:
                self.sent = None

    def finish(self, code: grpc.StatusCode, message: str = "",
               trailing: Sequence[tuple[str, str | bytes]] = ()) -> None:
        """End the call with a status (trailers, or a trailers-only answer)."""
        if self.finished:
            return
        value = _CODE_VALUES[code]
        block = f.STATUS_OK if value == 0 and not message and not trailing else f.status_block(value, message, trailing)
        if not self.headers_sent:
            block = f.RESPONSE_HEADERS + block
            self.headers_sent = True
        self.conn.pings.reset = True
        self.conn.write(f.header_frames(self.id, block, True, self.conn.peer_max_frame))
        self._close(not self.client_ended)
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()  # the call ended without its handler (too large, deadline)

    def reset(self) -> None:
        """The client reset the stream, or the connection is gone."""
        if self.finished:
            return
        self.cancelled = True
        self._close(False)
        if self.task is not None:
            self.task.cancel()

    def _close(self, rst: bool) -> None:
        self.finished = True
        self.pending = None
        if self.sent is not None:
            self.sent.cancel()
        if rst:
            # our answer is complete while the client still sends: no more of it
            self.conn.write(f.rst_stream(self.id, f.NO_ERROR))
        conn = self.conn
        conn.streams.pop(self.id, None)
        if self.timer is not None:
            self.timer.cancel()
        if self.requests is not None:
            self.requests.end()
        ctx = getattr(self, "ctx", None)
        if ctx is not None and ctx._callbacks:
            ctx.run_callbacks()
        if conn.closing and not conn.streams:
            conn.close_when_idle()

    def expire(self) -> None:
        # grpc-go only cancels the handler's context at the deadline; etcd's
        # handlers then return ctx.Err(), which grpc-go sends as UNKNOWN.
        self.timer = None
        self.finish(grpc.StatusCode.UNKNOWN, "context deadline exceeded")


class Connection(asyncio.Protocol):
    def __init__(self, server: GrpcServer, *, common_name: str | None = None) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.preface = False
        self.decoder = HeaderDecoder(max_header_list=MAX_HEADER_LIST)
        self.streams: dict[int, Stream] = {}
        self.last_stream_id = 0
        self.send_window = f.DEFAULT_WINDOW
        self.peer_window = f.DEFAULT_WINDOW  # the client's initial stream window
        self.peer_max_frame = f.DEFAULT_MAX_FRAME
        self.recv_unacked = 0
        self.paused = False
        self.closing = False  # GOAWAY sent: no new calls
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._senders: deque[Stream] = deque()  # streams with DATA to send, in turn
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._continuation: tuple[int, bytearray, bool] | None = None
        self.peer_name = ""
        self.common_name = common_name
        self.auth_context: dict[str, list[bytes]] = (
            {"x509_common_name": [common_name.encode()]} if common_name else {})
        self._loop = asyncio.get_running_loop()
        # keepalive: the client's pings (enforcement) and ours (liveness)
        self.pings = PingStrikes(server.keepalive.min_time)
        self.last_received = self._loop.time()
        self.ping_sent: float | None = None

    # ---- asyncio.Protocol ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer_name = f"ipv6:[{peer[0]}]:{peer[1]}" if ":" in str(peer[0]) else f"ipv4:{peer[0]}:{peer[1]}"
        elif peer:
            self.peer_name = f"unix:{peer}"
        if self.common_name is None and transport.get_extra_info("ssl_object") is not None:
            self._set_common_name(transport.get_extra_info("peercert"))
        self.server.connections.add(self)
        self.write(f.settings_frame({f.SETTINGS_INITIAL_WINDOW_SIZE: STREAM_WINDOW})
                   + f.window_update(0, CONNECTION_WINDOW - f.DEFAULT_WINDOW))

    def _set_common_name(self, cert: Any) -> None:
        """etcd's AuthInfoFromTLS: the CN of a verified client certificate."""
        for rdn in (cert or {}).get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    self.common_name = value
                    self.auth_context = {"x509_common_name": [value.encode()]}
                    return

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None
        self._out.clear()
        for stream in list(self.streams.values()):
            stream.reset()
        self._senders.clear()
        self._wake(self._drain_waiters)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake(self._drain_waiters)

    def data_received(self, data: bytes) -> None:
        self.last_received = self._loop.time()
        buf = self.buf
        buf += data
        if not self.preface:
            if len(buf) < len(f.PREFACE):
                if f.PREFACE.startswith(bytes(buf)):
                    return
                self._abort_connection(f.PROTOCOL_ERROR, "bad connection preface")
                return
            if buf[: len(f.PREFACE)] != f.PREFACE:
                self._abort_connection(f.PROTOCOL_ERROR, "bad connection preface")
                return
            del buf[: len(f.PREFACE)]
            self.preface = True
        pos = 0
        end = len(buf)
        unpack = _HEAD.unpack_from
        try:
            while end - pos >= 9:
                hi, lo, ftype, flags, sid = unpack(buf, pos)
                length = (hi << 8) | lo
                if length > f.DEFAULT_MAX_FRAME:
                    raise f.H2Error(f.FRAME_SIZE_ERROR, f"frame of {length} bytes")
                if end - pos - 9 < length:
                    break
                payload = buf[pos + 9 : pos + 9 + length]
                pos += 9 + length
                self._frame(ftype, flags, sid & 0x7FFFFFFF, payload)
                if self.transport is None:
                    return
        except f.H2Error as e:
            del buf[:pos]
            self._abort_connection(e.code, str(e))
            return
        del buf[:pos]

    # ---- frames ---------------------------------------------------------------

    def _frame(self, ftype: int, flags: int, sid: int, payload: bytearray) -> None:
        if self._continuation is not None and ftype != f.CONTINUATION:
            raise f.H2Error(f.PROTOCOL_ERROR, "expected CONTINUATION")
        if ftype == f.DATA:
            self._on_data(flags, sid, payload)
        elif ftype == f.HEADERS:
            if sid == 0:
                raise f.H2Error(f.PROTOCOL_ERROR, "HEADERS on stream 0")
            if flags & f.PADDED:
                payload = _unpad(payload)
            if flags & f.PRIORITY_FLAG:
                payload = payload[5:]
            if flags & f.END_HEADERS:
                self._on_headers(sid, payload, bool(flags & f.END_STREAM))
            else:
                self._continuation = (sid, payload, bool(flags & f.END_STREAM))
        elif ftype == f.CONTINUATION:
            cont = self._continuation
            if cont is None or cont[0] != sid:
                raise f.H2Error(f.PROTOCOL_ERROR, "unexpected CONTINUATION")
            cont[1].extend(payload)
            if len(cont[1]) > MAX_HEADER_BLOCK:
                raise f.H2Error(f.ENHANCE_YOUR_CALM, "header block too large")
            if flags & f.END_HEADERS:
                self._continuation = None
                self._on_headers(sid, cont[1], cont[2])
        elif ftype == f.SETTINGS:
            if sid != 0:
                raise f.H2Error(f.PROTOCOL_ERROR, "SETTINGS on a stream")
            if not flags & f.ACK:
                self._on_settings(payload)
        elif ftype == f.WINDOW_UPDATE:
            self._on_window_update(sid, payload)
        elif ftype == f.PING:
            if len(payload) != 8 or sid != 0:
                raise f.H2Error(f.PROTOCOL_ERROR if sid else f.FRAME_SIZE_ERROR, "bad PING")
            if flags & f.ACK:
                self.ping_sent = None
            else:
                if self.pings.on_ping(self._loop.time()):
                    # grpc-go's enforcement (--grpc-keepalive-min-time)
                    raise f.H2Error(f.ENHANCE_YOUR_CALM, "too_many_pings")
                self.write(f.frame(f.PING, f.ACK, 0, bytes(payload)))
        elif ftype == f.RST_STREAM:
            stream = self.streams.get(sid)
            if stream is not None:
                stream.reset()
        elif ftype == f.GOAWAY:
            self.closing = True
            if not self.streams:
                self.close_when_idle()
        elif ftype == f.PUSH_PROMISE:
            raise f.H2Error(f.PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        # PRIORITY and unknown frame types are ignored (RFC 9113 §5.5)

    def _on_data(self, flags: int, sid: int, payload: bytearray) -> None:
        if sid == 0:
            raise f.H2Error(f.PROTOCOL_ERROR, "DATA on stream 0")
        self.recv_unacked += len(payload)
        if self.recv_unacked >= CONNECTION_WINDOW // 4:
            self.write(f.window_update(0, self.recv_unacked))
            self.recv_unacked = 0
        stream = self.streams.get(sid)
        if stream is None:
            if sid > self.last_stream_id:
                raise f.H2Error(f.PROTOCOL_ERROR, "DATA on an idle stream")
            return  # a stream we already answered: its bytes are dropped
        stream.recv_window -= len(payload)
        if stream.recv_window < 0:
            # a client ignoring our window: not buffered without bound
            self.write(f.rst_stream(sid, f.FLOW_CONTROL_ERROR))
            stream.reset()
            return
        if flags & f.PADDED:
            size = len(payload)
            payload = _unpad(payload)
            # padding is flow-controlled but never reaches a handler: give it back now
            stream.consumed(size - len(payload))
        if payload:
            stream.on_data(payload)
        if flags & f.END_STREAM and not stream.client_ended:
            stream.on_end()

    def _on_headers(self, sid: int, block: bytearray, end_stream: bool) -> None:
        try:
            headers = self.decoder.decode(bytes(block))
        except HPACKError as e:
            raise f.H2Error(f.COMPRESSION_ERROR, f"header block: {e}") from e
        stream = self.streams.get(sid)
        if stream is not None:  # trailers from the client
            if not end_stream:
                raise f.H2Error(f.PROTOCOL_ERROR, "trailers without END_STREAM")
            if not stream.client_ended:
                stream.on_end()
            return
        if sid % 2 == 0 or sid <= self.last_stream_id:
            if sid <= self.last_stream_id and sid % 2:
                return  # trailers of a stream we already answered
            raise f.H2Error(f.PROTOCOL_ERROR, f"HEADERS on stream {sid}")
        self.last_stream_id = sid
        if self.closing:
            self.write(f.rst_stream(sid, f.REFUSED_STREAM))
            return
        path = b""
        timeout = encoding = None
        grpc_type = False
        for k, v in headers:
            if k == b":path":
                path = v
            elif k == b"grpc-timeout":
                timeout = v
            elif k == b"grpc-encoding":
                encoding = v
            elif k == b"content-type":
                grpc_type = v == b"application/grpc" or v.startswith((b"application/grpc+", b"application/grpc;"))
        seconds = f.parse_timeout(timeout) if timeout is not None else None
        if not grpc_type or (timeout is not None and seconds is None):
            # not a gRPC request, or a malformed deadline: grpc-go (etcd) resets the stream
            self.write(f.rst_stream(sid, f.PROTOCOL_ERROR))
            return
        method = self.server.lookup(path)
        if method is None:
            self._unknown_method(sid, path, end_stream)
            return
        stream = Stream(self, sid, method, headers)
        self.streams[sid] = stream
        deadline = None
        if seconds is not None:
            deadline = self._loop.time() + seconds
            stream.timer = self._loop.call_at(deadline, stream.expire)
        stream.ctx = ServicerContext(stream, deadline)
        if encoding is not None and encoding != b"identity":
            # etcd 3.4's grpc-go has no decompressor registered: it refuses every
            # compressed request, so no etcd client sends one
            stream.finish(grpc.StatusCode.UNIMPLEMENTED,
                          f'grpc: Decompressor is not installed for grpc-encoding "{encoding.decode("latin-1")}"')
            return
        if method.request_streaming:
            stream.requests = RequestStream(stream)
            stream.ctx._requests = stream.requests
            stream.task = self._loop.create_task(self.server.run_streaming(stream))
        if end_stream:
            stream.on_end()

    def _unknown_method(self, sid: int, path: bytes, end_stream: bool) -> None:
        # grpc-go's answers (etcd's server), as a trailers-only response; its
        # parse: one leading "/" dropped, the service ends at the last "/"
        text = path.decode("utf-8", errors="replace")
        service, slash, name = text.removeprefix("/").rpartition("/")
        code = grpc.StatusCode.UNIMPLEMENTED
        if not slash:
            # (sic: grpc-go answers RESOURCE_EXHAUSTED; Go's %q quoting)
            code = grpc.StatusCode.RESOURCE_EXHAUSTED
            message = f"malformed method name: {json.dumps(text, ensure_ascii=False)}"
        elif self.server.knows_service(service):
            message = f"unknown method {name} for service {service}"
        else:
            message = f"unknown service {service}"
        block = f.RESPONSE_HEADERS + f.status_block(_CODE_VALUES[code], message)
        self.write(f.header_frames(sid, block, True, self.peer_max_frame))
        if not end_stream:
            self.write(f.rst_stream(sid, f.NO_ERROR))

    def _on_settings(self, payload: bytearray) -> None:
        if len(payload) % 6:
            raise f.H2Error(f.FRAME_SIZE_ERROR, "SETTINGS length")
        for i in range(0, len(payload), 6):
            key = int.from_bytes(payload[i : i + 2], "big")
            value = int.from_bytes(payload[i + 2 : i + 6], "big")
            if key == f.SETTINGS_INITIAL_WINDOW_SIZE:
                if value > f.MAX_WINDOW:
                    raise f.H2Error(f.FLOW_CONTROL_ERROR, "initial window too large")
                delta = value - self.peer_window
                self.peer_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
                    if delta > 0 and stream.pending is not None and not stream.queued:
                        stream.queued = True
                        self._senders.append(stream)
                self.pump()
            elif key == f.SETTINGS_MAX_FRAME_SIZE:
                if not f.DEFAULT_MAX_FRAME <= value <= f.MAX_FRAME_LIMIT:
                    raise f.H2Error(f.PROTOCOL_ERROR, "bad max frame size")
                self.peer_max_frame = value
            # header table size: our encoder uses no dynamic table; the rest
            # (push, concurrency, header list size) do not limit a server's sends
        self.write(f.frame(f.SETTINGS, f.ACK, 0))

    def _on_window_update(self, sid: int, payload: bytearray) -> None:
        if len(payload) != 4:
            raise f.H2Error(f.FRAME_SIZE_ERROR, "WINDOW_UPDATE length")
        inc = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if sid == 0:
            if inc == 0:
                raise f.H2Error(f.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self.send_window += inc
            if self.send_window > f.MAX_WINDOW:
                raise f.H2Error(f.FLOW_CONTROL_ERROR, "connection window overflow")
        else:
            stream = self.streams.get(sid)
            if stream is None:
                return
            if inc == 0:
                self.write(f.rst_stream(sid, f.PROTOCOL_ERROR))
                stream.reset()
                return
            stream.send_window += inc
            if stream.send_window > f.MAX_WINDOW:
                self.write(f.rst_stream(sid, f.FLOW_CONTROL_ERROR))
                stream.reset()
                return
            if stream.pending is not None:
                self.pump(stream)
                return
        self.pump()

    # ---- calls ------------------------------------------------------------

    def start_unary(self, stream: Stream) -> None:
        stream.task = self._loop.create_task(self.server.run_unary(stream))

    # ---- writing ----------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue bytes; they are written together at the end of this loop iteration."""
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if not out or self.transport is None:
            out.clear()
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self.transport.write(data)

    def pump(self, stream: Stream | None = None) -> None:
        """Write the streams' pending DATA, ``stream``'s joining the round.

        Round robin, one frame per stream per turn, while the connection
        window lasts (grpc-go's writer does the same): a large response shares
        the window with the calls behind it instead of holding it to its end.
        A stream whose own window is shut leaves the round until its
        WINDOW_UPDATE (or a larger SETTINGS_INITIAL_WINDOW_SIZE) brings it back.
        """
        senders = self._senders
        if stream is not None and not stream.queued:
            stream.queued = True
            senders.append(stream)
        while senders and self.send_window > 0:
            s = senders.popleft()
            data = s.pending
            n = 0 if data is None else min(s.send_window, self.send_window, self.peer_max_frame, len(data))
            if data is None or n <= 0:
                s.queued = False  # finished, or blocked on its own window
                continue
            self.write(f.frame(f.DATA, 0, s.id, bytes(data[:n])))
            self.pings.reset = True
            s.send_window -= n
            self.send_window -= n
            if n < len(data):
                s.pending = data[n:]
                senders.append(s)
            else:
                s.pending = None
                s.queued = False
                if s.sent is not None and not s.sent.done():
                    s.sent.set_result(None)

    async def drain(self) -> None:
        if self.transport is None:
            raise asyncio.CancelledError
        fut = self._loop.create_future()
        self._drain_waiters.append(fut)
        await fut

    @staticmethod
    def _wake(waiters: list[asyncio.Future[None]]) -> None:
        for w in waiters:
            if not w.done():
                w.set_result(None)
        waiters.clear()

    def keepalive(self, now: float, policy: KeepalivePolicy) -> None:
        """Ping a connection silent for an interval; close it when a ping goes unanswered."""
        if self.ping_sent is not None and self.last_received > self.ping_sent:
            self.ping_sent = None  # anything received proves the client alive
        due = keepalive_due(now, self.last_received, self.ping_sent, policy)
        if due == "ping":
            self.ping_sent = now
            self.write(f.frame(f.PING, 0, 0, b"\0" * 8))
        elif due == "close":
            log.info("closing the connection from %s: keepalive ping not answered in %gs",
                     self.peer_name, policy.timeout)
            self.abort()

    # ---- shutdown ---------------------------------------------------------------

    def go_away(self) -> None:
        """No new calls; those running go on (graceful stop)."""
        if self.closing or self.transport is None:
            return
        self.closing = True
        self.write(f.goaway(self.last_stream_id, f.NO_ERROR))
        if not self.streams:
            self.close_when_idle()

    def close_when_idle(self) -> None:
        if self.transport is not None:
            self._flush()
            self.transport.close()

    def abort(self) -> None:
        for stream in list(self.streams.values()):
            stream.reset()
        if self.transport is not None:
            self._flush()
            self.transport.close()

    def _abort_connection(self, code: int, reason: str) -> None:
        log.debug("HTTP/2 connection error from %s: %s", self.peer_name, reason)
        if self.transport is None:
            return
        self.write(f.goaway(self.last_stream_id, code, reason.encode()))
        self.abort()


def _unpad(payload: bytearray) -> bytearray:
    if not payload:
        raise f.H2Error(f.PROTOCOL_ERROR, "padded frame without pad length")
    pad = payload[0]
    if pad >= len(payload):
        raise f.H2Error(f.PROTOCOL_ERROR, "padding longer than the frame")
    return payload[1 : len(payload) - pad]


StreamCallback = Callable[[Stream], None]
