"""A raw HTTP/2 gRPC client for protocol-level tests of the native server.

The ``h2`` library keeps the client's protocol state (HPACK, streams, its own
flow-control checks); every frame that crosses the socket is also parsed here,
so a test can assert on the frames themselves (windows, sizes, flags, order),
rewrite what h2 produced (padding, CONTINUATION splits) or send frames h2
would never write (protocol errors). No task of its own: a test pumps the
socket with ``wait_for``, so nothing outlives it.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5
DEFAULT_WINDOW = 65_535
DEFAULT_MAX_FRAME = 16_384


@dataclass(frozen=True)
class Frame:
    type: int
    flags: int
    sid: int
    payload: bytes

    def encode(self) -> bytes:
        return (len(self.payload).to_bytes(3, "big") + bytes((self.type, self.flags))
                + self.sid.to_bytes(4, "big") + self.payload)


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return Frame(ftype, flags, sid, payload).encode()


def split_frames(buf: bytearray) -> list[Frame]:
    """The complete frames at the start of ``buf`` (removed from it)."""
    out = []
    while len(buf) >= 9:
        length = int.from_bytes(buf[:3], "big")
        if len(buf) < 9 + length:
            break
        out.append(Frame(buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF,
                         bytes(buf[9 : 9 + length])))
        del buf[: 9 + length]
    return out


def grpc_message(raw: bytes) -> bytes:
    return b"\x00" + len(raw).to_bytes(4, "big") + raw


def grpc_messages(body: bytes) -> list[bytes]:
    """The messages of a gRPC body (uncompressed); the body must end on a message."""
    out = []
    pos = 0
    while pos < len(body):
        assert body[pos] == 0, "compressed response message"
        size = int.from_bytes(body[pos + 1 : pos + 5], "big")
        out.append(body[pos + 5 : pos + 5 + size])
        pos += 5 + size
    assert pos == len(body), "body ends inside a message"
    return out


@dataclass
class Call:
    """What one stream received."""

    sid: int
    headers: dict[bytes, bytes] | None = None
    body: bytearray = field(default_factory=bytearray)
    trailers: dict[bytes, bytes] | None = None
    ended: bool = False
    reset: int | None = None  # RST_STREAM code from the server

    @property
    def status(self) -> dict[bytes, bytes]:
        """The trailers, or the headers of a trailers-only answer."""
        if self.trailers is not None:
            return self.trailers
        assert self.headers is not None and b"grpc-status" in self.headers, self
        return self.headers

    @property
    def code(self) -> int:
        return int(self.status[b"grpc-status"])

    @property
    def message(self) -> str:
        return self.status.get(b"grpc-message", b"").decode()

    def messages(self) -> list[bytes]:
        return grpc_messages(bytes(self.body))


class WindowCheck:
    """The receive windows the client has opened, from the frames it sent, and
    an assertion on every DATA frame that the server stays within them."""

    def __init__(self) -> None:
        self.initial = DEFAULT_WINDOW
        self.max_frame = DEFAULT_MAX_FRAME
        self.conn_open = DEFAULT_WINDOW
        self.stream_open: dict[int, int] = {}
        self.conn_used = 0
        self.stream_used: dict[int, int] = {}
        self.largest_frame = 0

    def sent(self, fr: Frame) -> None:
        if fr.type == SETTINGS and not fr.flags & ACK:
            for i in range(0, len(fr.payload), 6):
                key, value = struct.unpack_from(">HL", fr.payload, i)
                if key == SETTINGS_INITIAL_WINDOW_SIZE:
                    for sid in self.stream_open:
                        self.stream_open[sid] += value - self.initial
                    self.initial = value
                elif key == SETTINGS_MAX_FRAME_SIZE:
                    # a smaller size only binds once the server has the SETTINGS
                    self.max_frame = max(self.max_frame, value)
        elif fr.type == HEADERS:
            self.stream_open.setdefault(fr.sid, self.initial)
            self.stream_used.setdefault(fr.sid, 0)
        elif fr.type == WINDOW_UPDATE:
            inc = int.from_bytes(fr.payload, "big") & 0x7FFFFFFF
            if fr.sid == 0:
                self.conn_open += inc
            elif fr.sid in self.stream_open:
                self.stream_open[fr.sid] += inc

    def received(self, fr: Frame) -> None:
        if fr.type != DATA:
            return
        n = len(fr.payload)
        self.largest_frame = max(self.largest_frame, n)
        assert n <= self.max_frame, f"DATA frame of {n} bytes > SETTINGS_MAX_FRAME_SIZE {self.max_frame}"
        self.conn_used += n
        self.stream_used[fr.sid] = self.stream_used.get(fr.sid, 0) + n
        assert self.conn_used <= self.conn_open, (
            f"connection window exceeded: {self.conn_used} > {self.conn_open}")
        assert self.stream_used[fr.sid] <= self.stream_open.get(fr.sid, self.initial), (
            f"stream {fr.sid} window exceeded: {self.stream_used[fr.sid]} > {self.stream_open.get(fr.sid)}")


Rewrite = Callable[[list[Frame]], list[Frame]]


class H2Client:
    """One HTTP/2 connection to the server, driven by the test."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 conn: h2.connection.H2Connection, authority: str) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = conn
        self.authority = authority
        self.received: list[Frame] = []
        self.sent: list[Frame] = []
        self.events: list[h2.events.Event] = []
        self.calls: dict[int, Call] = {}
        self.window = WindowCheck()
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.eof = False
        # after frames h2 knows nothing of (send_raw), h2 may reject the
        # server's answers: then only the raw frames are kept
        self.raw_only = False
        self._raw_decoder = hpack.Decoder()
        self._block = bytearray()
        self._block_ends = False
        self._in = bytearray()
        self._out = bytearray()
        self._out_preface = False

    @classmethod
    async def connect(cls, port: int, settings: dict[int, int] | None = None) -> H2Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        if settings:
            # in force from the start (h2 applies settings changes on their ACK)
            conn.local_settings = h2.settings.Settings(
                client=True, initial_values={h2.settings.SettingCodes(k): v for k, v in settings.items()})
            conn.max_inbound_frame_size = conn.local_settings.max_frame_size
            conn.incoming_buffer.max_frame_size = conn.local_settings.max_frame_size
        conn.initiate_connection()
        c = cls(reader, writer, conn, f"127.0.0.1:{port}")
        c.flush()
        # the server's SETTINGS, and its ACK of ours
        await c.wait_for(lambda: any(isinstance(e, h2.events.SettingsAcknowledged) for e in c.events)
                         and any(isinstance(e, h2.events.RemoteSettingsChanged) for e in c.events))
        return c

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        except (OSError, TimeoutError):
            pass

    # ---- sending ----------------------------------------------------------------

    def flush(self, rewrite: Rewrite | None = None) -> None:
        """Write what h2 queued, its frames first passed through ``rewrite``."""
        data = self.conn.data_to_send()
        if not self._out_preface:
            assert data.startswith(PREFACE)
            self.writer.write(PREFACE)
            data = data[len(PREFACE):]
            self._out_preface = True
        self._out += data
        frames = split_frames(self._out)
        assert not self._out, "h2 queued a partial frame"
        if rewrite is not None:
            frames = rewrite(frames)
        self.send_frames(frames)

    def send_frames(self, frames: Iterable[Frame]) -> None:
        for fr in frames:
            self.sent.append(fr)
            self.window.sent(fr)
            self.writer.write(fr.encode())

    def send_raw(self, data: bytes, *, raw_only: bool = False) -> None:
        """Bytes h2 knows nothing of; ``raw_only``: no more h2 events after them."""
        self.raw_only = self.raw_only or raw_only
        self.writer.write(data)

    def goaways(self) -> list[tuple[int, int, bytes]]:
        """(last stream id, error code, debug data) of each GOAWAY received."""
        return [(int.from_bytes(f.payload[:4], "big") & 0x7FFFFFFF, int.from_bytes(f.payload[4:8], "big"),
                 f.payload[8:]) for f in self.received if f.type == GOAWAY]

    def request_headers(self, path: str, metadata: Iterable[tuple[str, str]] = (),
                        grpc_timeout: str | None = None) -> list[tuple[str, str]]:
        headers = [(":method", "POST"), (":scheme", "http"), (":path", path),
                   (":authority", self.authority), ("content-type", "application/grpc"),
                   ("te", "trailers")]
        if grpc_timeout is not None:
            headers.append(("grpc-timeout", grpc_timeout))
        return headers + list(metadata)

    def start(self, path: str, message: bytes | None = None, *, end: bool = True,
              metadata: Iterable[tuple[str, str]] = (), grpc_timeout: str | None = None,
              pad: int | None = None, rewrite: Rewrite | None = None,
              priority: bool = False) -> int:
        """Open a call: HEADERS, then ``message`` (if any), half-closed if ``end``."""
        sid = self.conn.get_next_available_stream_id()
        self.calls[sid] = Call(sid)
        headers = self.request_headers(path, metadata, grpc_timeout)
        self.conn.send_headers(sid, headers, end_stream=message is None and end,
                               priority_weight=16 if priority else None)
        if message is not None:
            self.send_message(sid, message, end=end, pad=pad, flush=False)
        self.flush(rewrite)
        return sid

    def send_message(self, sid: int, message: bytes, *, end: bool = False, pad: int | None = None,
                     flush: bool = True) -> None:
        body = grpc_message(message)
        step = self.conn.max_outbound_frame_size - (256 if pad is not None else 0)
        chunks = [body[i : i + step] for i in range(0, len(body), step)] or [b""]
        for i, chunk in enumerate(chunks):
            self.conn.send_data(sid, chunk, end_stream=end and i == len(chunks) - 1, pad_length=pad)
        if flush:
            self.flush()

    def grant(self, increment: int, sid: int | None = None) -> None:
        """A WINDOW_UPDATE (for the connection when ``sid`` is None)."""
        self.conn.increment_flow_control_window(increment, stream_id=sid)
        self.flush()

    # ---- receiving --------------------------------------------------------------

    async def pump(self, limit: float) -> bool:
        """Read once (waiting at most ``limit`` s); False when nothing came."""
        if self.eof:
            return False
        try:
            chunk = await asyncio.wait_for(self.reader.read(1 << 16), limit)
        except TimeoutError:
            return False
        except ConnectionError:
            chunk = b""
        if not chunk:
            self.eof = True
            return True
        self._in += chunk
        for fr in split_frames(self._in):
            self.received.append(fr)
            self.window.received(fr)
            if self.raw_only:
                self._raw_frame(fr)
                continue
            for ev in self.conn.receive_data(fr.encode()):
                self._event(ev)
        out = b"" if self.raw_only else self.conn.data_to_send()  # h2's PING and SETTINGS ACKs
        if out and not self.writer.is_closing():
            self._out += out
            self.send_frames(split_frames(self._out))
        return True

    def _event(self, ev: h2.events.Event) -> None:
        self.events.append(ev)
        sid = getattr(ev, "stream_id", None)
        call = self.calls.get(sid) if sid is not None else None
        if isinstance(ev, h2.events.ResponseReceived) and call is not None:
            call.headers = dict(ev.headers)
        elif isinstance(ev, h2.events.DataReceived) and call is not None:
            call.body += ev.data
        elif isinstance(ev, h2.events.TrailersReceived) and call is not None:
            call.trailers = dict(ev.headers)
        elif isinstance(ev, h2.events.StreamEnded) and call is not None:
            call.ended = True
        elif isinstance(ev, h2.events.StreamReset) and call is not None:
            call.reset = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = ev
            # h2 takes no frame after a GOAWAY, but the streams it spares go on
            self.raw_only = True

    def _raw_frame(self, fr: Frame) -> None:
        """The calls' frames decoded here (the server's header blocks use no
        dynamic table: any HPACK decoder reads them)."""
        call = self.calls.get(fr.sid)
        if call is None:
            return
        if fr.type in (HEADERS, CONTINUATION):
            if fr.type == HEADERS:
                self._block = bytearray()
                self._block_ends = bool(fr.flags & END_STREAM)
            self._block += fr.payload
            if fr.flags & END_HEADERS:
                headers = {bytes(k): bytes(v) for k, v in self._raw_decoder.decode(bytes(self._block), raw=True)}
                if call.headers is None:
                    call.headers = headers
                else:
                    call.trailers = headers
                call.ended = call.ended or self._block_ends
        elif fr.type == DATA:
            call.body += fr.payload
            call.ended = call.ended or bool(fr.flags & END_STREAM)
        elif fr.type == RST_STREAM:
            call.reset = int.from_bytes(fr.payload, "big")

    async def wait_for(self, cond: Callable[[], bool], limit: float = 10.0) -> None:
        """Pump until ``cond()``; fails after ``limit`` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while not cond():
            left = deadline - loop.time()
            assert left > 0, "timed out waiting"
            if not await self.pump(left) and self.eof:
                assert cond(), "connection closed while waiting"

    async def quiet(self, seconds: float) -> list[Frame]:
        """The frames that arrive within ``seconds``."""
        loop = asyncio.get_running_loop()
        before = len(self.received)
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0 and not self.eof:
            await self.pump(left)
        return self.received[before:]

    async def finish(self, sid: int, limit: float = 10.0) -> Call:
        """The call once the server ended or reset it."""
        call = self.calls[sid]
        await self.wait_for(lambda: call.ended or call.reset is not None, limit)
        return call

    async def call(self, path: str, message: bytes, *, metadata: Iterable[tuple[str, str]] = (),
                   grpc_timeout: str | None = None, pad: int | None = None,
                   rewrite: Rewrite | None = None) -> Call:
        """A call with one request message, to its end."""
        return await self.finish(self.start(path, message, metadata=metadata, grpc_timeout=grpc_timeout, pad=pad,
                                            rewrite=rewrite))

    def open_stream(self, headers: list[tuple[str, str]], *, end: bool = False) -> int:
        """A stream with exactly these request headers."""
        sid = self.conn.get_next_available_stream_id()
        self.calls[sid] = Call(sid)
        self.conn.send_headers(sid, headers, end_stream=end)
        self.flush()
        return sid
