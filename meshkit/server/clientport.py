"""The client port: gRPC and HTTP/1.1 on one listener, as etcd's cmux does.

etcd answers gRPC *and* HTTP/1.1 (``/health``, ``/version``, ``/metrics``, the
gRPC gateway) on each client URL. grpcio cannot share a socket, so
:class:`ClientMux` owns the client listeners and looks at the first bytes of each
accepted connection without consuming them (``MSG_PEEK``):

* plain URLs: the HTTP/2 connection preface means gRPC, the connection is
  forwarded byte for byte to the grpc.aio server, which listens on an internal
  address only (a unix socket in a private directory); a request line of
  HTTP/1.x means HTTP, the socket is handed to aiohttp; anything else is closed
  (cmux's ``HTTP2()``/``HTTP1()`` matchers, in etcd's order);
* TLS URLs: the ClientHello's ALPN list decides. A client that offers ``h2``
  (grpcio also ``grpc-exp``) and not ``http/1.1`` is a gRPC client: its raw TLS
  bytes go to grpc's own TLS listener, so grpc terminates TLS and the client
  certificate's CN keeps working as the Auth user exactly as with a direct
  listener. Any other hello (curl and Go offer ``h2,http/1.1``, most HTTP/1.1
  clients offer ``http/1.1`` or nothing; a malformed one) is terminated here with
  the same certificate and client-auth settings and served by aiohttp.

Forwarding is on the path of every RPC, so it is two plain asyncio Protocols
(``data_received`` -> ``transport.write``, pause/resume reading both ways for
flow control, half-close passed on): no task, no coroutine per chunk.

``parse_client_hello`` is a small, strict TLS ClientHello parser: incomplete
input asks for more bytes, anything malformed is reported, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import socket
import ssl
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from meshkit._internal.errors import MeshkitError

log = logging.getLogger("meshkit.server.clientport")

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# cmux's HTTP1() matcher reads at most this much looking for the request line.
MAX_HTTP1_LINE = 4096
# A ClientHello handshake message larger than this is treated as malformed.
MAX_HELLO_BYTES = 64 * 1024
# Peeking stops here (records of a fragmented hello plus their headers).
MAX_TLS_PEEK = MAX_HELLO_BYTES + 1024
# How long an accepted connection may take to show what it speaks.
SNIFF_TIMEOUT = 60.0
TLS_HANDSHAKE_TIMEOUT = 60.0
# Go's net.Listen enables TCP keepalive (15 s) on accepted connections.
TCP_KEEPALIVE_S = 15

Verdict = Literal["grpc", "http", "more", "reject"]


class ListenError(MeshkitError):
    """A client listener could not be bound."""


# --------------------------------------------------------------------------
# protocol detection (pure functions)
# --------------------------------------------------------------------------

_HTTP1_VERSION = re.compile(rb"HTTP/1\.[0-9]")


def classify_plain(data: bytes) -> Verdict:
    """What a plain client connection speaks, from its first bytes.

    "more": not enough bytes to tell yet. "reject": neither HTTP/2 nor HTTP/1.x
    (etcd's cmux closes such connections).
    """
    n = min(len(data), len(H2_PREFACE))
    if data[:n] == H2_PREFACE[:n]:
        return "grpc" if n == len(H2_PREFACE) else "more"
    end = data.find(b"\n", 0, MAX_HTTP1_LINE)
    if end < 0:
        return "more" if len(data) < MAX_HTTP1_LINE else "reject"
    line = data[:end]
    if line.endswith(b"\r"):
        line = line[:-1]
    # Go's parseRequestLine + ParseHTTPVersion, major version 1 (cmux.HTTP1)
    parts = line.split(b" ", 2)
    if len(parts) == 3 and _HTTP1_VERSION.fullmatch(parts[2]):
        return "http"
    return "reject"


@dataclass(frozen=True)
class ClientHello:
    """What the parser keeps of a ClientHello: the ALPN protocols offered.

    ``alpn`` is None when the hello has no ALPN extension.
    """

    alpn: tuple[bytes, ...] | None


@dataclass(frozen=True)
class Incomplete:
    """The input is a valid prefix; at least ``need`` bytes are required."""

    need: int


@dataclass(frozen=True)
class Malformed:
    reason: str


class _Short(Exception):
    pass


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise _Short
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vec(self, len_size: int) -> bytes:
        """A TLS vector: a ``len_size``-byte length, then that many bytes."""
        return self.take(self.uint(len_size))

    @property
    def done(self) -> bool:
        return self.pos == len(self.data)


_HANDSHAKE = 22
_CLIENT_HELLO = 1
_EXT_ALPN = 16
_MAX_RECORD = 1 << 14


def parse_client_hello(data: bytes) -> ClientHello | Incomplete | Malformed:
    """Parse the ClientHello at the start of a TLS connection.

    Strict: TLS records of type handshake (fragments are joined), exactly one
    ClientHello message filling them, well-formed vectors, no duplicate
    extensions, a non-empty ALPN list of non-empty names. Never raises.
    """
    handshake = bytearray()
    pos = 0
    while True:
        if len(data) < pos + 5:
            return Incomplete(pos + 5)
        ctype, major, minor = data[pos], data[pos + 1], data[pos + 2]
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        if ctype != _HANDSHAKE:
            return Malformed(f"record type {ctype} is not handshake")
        if major != 3 or minor > 4:
            return Malformed(f"record version {major}.{minor}")
        if length == 0 or length > _MAX_RECORD:
            return Malformed(f"record length {length}")
        if len(data) < pos + 5 + length:
            return Incomplete(pos + 5 + length)
        handshake += data[pos + 5 : pos + 5 + length]
        pos += 5 + length
        if len(handshake) < 4:
            continue
        if handshake[0] != _CLIENT_HELLO:
            return Malformed(f"handshake type {handshake[0]} is not ClientHello")
        size = int.from_bytes(handshake[1:4], "big")
        if size > MAX_HELLO_BYTES:
            return Malformed(f"ClientHello of {size} bytes")
        if len(handshake) == 4 + size:
            return _parse_hello_body(bytes(handshake[4:]))
        if len(handshake) > 4 + size:
            return Malformed("bytes after the ClientHello in its records")


def _parse_hello_body(body: bytes) -> ClientHello | Malformed:
    r = _Reader(body)
    try:
        r.take(2)  # legacy_version
        r.take(32)  # random
        if len(r.vec(1)) > 32:
            return Malformed("session id longer than 32 bytes")
        suites = r.vec(2)
        if not suites or len(suites) % 2:
            return Malformed("bad cipher suite list")
        if not r.vec(1):
            return Malformed("no compression methods")
        if r.done:
            return ClientHello(alpn=None)
        extensions = _Reader(r.vec(2))
        if not r.done:
            return Malformed("bytes after the extensions")
        seen: set[int] = set()
        alpn: tuple[bytes, ...] | None = None
        while not extensions.done:
            etype = extensions.uint(2)
            edata = extensions.vec(2)
            if etype in seen:
                return Malformed(f"extension {etype} given twice")
            seen.add(etype)
            if etype == _EXT_ALPN:
                parsed = _parse_alpn(edata)
                if isinstance(parsed, Malformed):
                    return parsed
                alpn = parsed
    except _Short:
        return Malformed("truncated ClientHello")
    return ClientHello(alpn=alpn)


def _parse_alpn(data: bytes) -> tuple[bytes, ...] | Malformed:
    r = _Reader(data)
    names = _Reader(r.vec(2))
    if not r.done:
        return Malformed("bytes after the ALPN list")
    if names.done:
        return Malformed("empty ALPN list")
    out = []
    while not names.done:
        name = names.vec(1)
        if not name:
            return Malformed("empty ALPN protocol name")
        out.append(name)
    return tuple(out)


def hello_wants_grpc(hello: ClientHello | Incomplete | Malformed) -> bool:
    """A gRPC client offers h2 (grpcio also grpc-exp) and never http/1.1."""
    if not isinstance(hello, ClientHello) or hello.alpn is None:
        return False
    offered = hello.alpn
    return b"http/1.1" not in offered and (b"h2" in offered or b"grpc-exp" in offered)


def classify_tls(data: bytes) -> Verdict:
    hello = parse_client_hello(data)
    if isinstance(hello, Incomplete):
        # Too big to peek whole: let Python's TLS deal with it (it serves HTTP).
        return "more" if hello.need <= MAX_TLS_PEEK else "http"
    return "grpc" if hello_wants_grpc(hello) else "http"


# --------------------------------------------------------------------------
# forwarding (the hot path)
# --------------------------------------------------------------------------


class _Backlog:
    """Where a half's bytes go until the other side's transport exists."""

    __slots__ = ("chunks", "eof")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.eof = False

    def write(self, data: bytes) -> None:
        self.chunks.append(data)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True


class _Half(asyncio.Protocol):
    """One side of a forwarded connection: what it receives, the other side sends.

    Once both sides are connected, ``data_received`` *is* the other transport's
    ``write`` (an instance attribute; uvloop caches it at ``set_protocol``): a
    chunk goes from one socket to the other without a Python frame.
    """

    __slots__ = ("_eof", "_lost", "_out", "data_received", "mux", "peer", "transport")

    def __init__(self, mux: ClientMux | None) -> None:
        self.mux = mux  # set on the client side only: it tracks live links
        self.peer: _Half
        self.transport: asyncio.Transport | None = None
        backlog = _Backlog()
        self._out: asyncio.Transport | _Backlog = backlog
        self.data_received = backlog.write  # type: ignore[method-assign]
        self._eof = False
        self._lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence the cast
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        peer = self.peer
        if peer._lost:
            transport.close()
            return
        if peer.transport is not None:
            self._attach(peer.transport)
            peer._attach(transport)
        if self.mux is not None:
            self.mux._links.add(self)

    def _attach(self, out: asyncio.Transport) -> None:
        backlog = self._out
        self._out = out
        self.data_received = out.write  # type: ignore[method-assign]
        if self.transport is not None:
            self.transport.set_protocol(self)  # uvloop: re-read data_received
        if isinstance(backlog, _Backlog):
            for chunk in backlog.chunks:
                out.write(chunk)
            if backlog.eof:
                out.write_eof()

    def eof_received(self) -> bool:
        self._eof = True
        out = self._out
        if self.peer._eof:
            # both directions are done
            if self.transport is not None:
                self.transport.close()
            if not isinstance(out, _Backlog):
                out.close()
            return False
        if out.can_write_eof():
            out.write_eof()
            return True  # keep writing what the other side still sends
        return False

    def pause_writing(self) -> None:
        # our transport's buffer is full: stop reading what fills it
        t = self.peer.transport
        if t is not None and not t.is_closing():
            t.pause_reading()

    def resume_writing(self) -> None:
        t = self.peer.transport
        if t is not None and not t.is_closing():
            t.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self.mux is not None:
            self.mux._links.discard(self)
        t = self.peer.transport
        if t is not None:
            # close() flushes what is buffered (a GOAWAY, the last frames)
            t.close()


# --------------------------------------------------------------------------
# the listener
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class GrpcTarget:
    """The grpc server's internal address: a unix socket path, or host and port."""

    path: str = ""
    host: str = ""
    port: int = 0

    @property
    def grpc_address(self) -> str:
        return f"unix:{self.path}" if self.path else f"{self.host}:{self.port}"

    async def connect(self, factory: Callable[[], asyncio.Protocol]) -> None:
        loop = asyncio.get_running_loop()
        if self.path:
            await loop.create_unix_connection(factory, self.path)
        else:
            transport, _ = await loop.create_connection(factory, self.host, self.port)
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (no SO_REUSEPORT: a taken port is an error)."""
    if host in ("", "::"):
        families = [socket.AF_INET6, socket.AF_INET] if socket.has_ipv6 else [socket.AF_INET]
    else:
        families = [socket.AF_INET6 if ":" in host else socket.AF_INET]
    last: OSError | None = None
    for family in families:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and host in ("", "::"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            bind_host = host or ("::" if family == socket.AF_INET6 else "0.0.0.0")
            sock.bind((bind_host, port))
            sock.listen(socket.SOMAXCONN)
            sock.setblocking(False)
            return sock
        except OSError as e:
            sock.close()
            last = e
            if e.errno == errno.EADDRINUSE:
                break
    assert last is not None
    if last.errno == errno.EADDRINUSE:
        raise ListenError(f"listen tcp {host}:{port}: bind: address already in use") from last
    raise ListenError(f"listen tcp {host}:{port}: {last.strerror or last}") from last


def _drop(sock: socket.socket) -> None:
    """Close a connection not served: read what it sent first, so that the
    close is a FIN and not a reset (etcd's cmux has read those bytes too)."""
    with contextlib.suppress(OSError):
        sock.recv(MAX_TLS_PEEK)
    sock.close()


def _tune_accepted(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, TCP_KEEPALIVE_S)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, TCP_KEEPALIVE_S)


_ACCEPT_RETRY = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED,
                 errno.EPERM, errno.EPROTO}


class ClientMux:
    """Client listeners that serve gRPC and HTTP/1.1 on the same ports.

    ``async with ClientMux(listen, grpc=target, http=factory) as mux:`` binds
    every (host, port) (port 0 picks a free one; ``mux.ports`` are the bound
    ones), accepts and routes connections; leaving stops accepting, drops the
    connections still being sniffed and aborts forwarded ones (close the grpc
    server first for a graceful GOAWAY). With ``tls`` set the listeners are TLS
    ports: ``tls`` terminates the HTTP connections, gRPC ones go to ``grpc``
    (which must then be grpc's TLS listener) still encrypted.
    """

    def __init__(self, listen: Sequence[tuple[str, int]], *, grpc: GrpcTarget | Callable[[], asyncio.Protocol],
                 http: Callable[[], asyncio.Protocol] | None, tls: ssl.SSLContext | None = None,
                 grpc_tls: ssl.SSLContext | None = None, sniff_timeout: float = SNIFF_TIMEOUT) -> None:
        self.listen = list(listen)
        self.grpc = grpc
        self.http = http
        self.tls = tls
        # TLS for gRPC connections served in process (``grpc`` a protocol factory)
        self.grpc_tls = grpc_tls
        self.sniff_timeout = sniff_timeout
        self.ports: list[int] = []
        self._socks: list[socket.socket] = []
        self._accepting: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._links: set[_Half] = set()
        self._closed = False
        # counters, for tests and debugging
        self.routed: dict[str, int] = {"grpc": 0, "http": 0, "reject": 0}

    async def __aenter__(self) -> ClientMux:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        try:
            for host, port in self.listen:
                sock = bind_listener(host, port)
                self._socks.append(sock)
                self.ports.append(int(sock.getsockname()[1]))
        except BaseException:
            await self.close()
            raise
        loop = asyncio.get_running_loop()
        for sock in self._socks:
            self._accepting.append(loop.create_task(self._accept_loop(sock), name="meshkit-client-accept"))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro, name="meshkit-client-conn")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close_listeners(self) -> None:
        """Stop accepting (connections already routed go on). Idempotent."""
        self._closed = True
        accepting, self._accepting = self._accepting, []
        for t in accepting:
            t.cancel()
        if accepting:
            await asyncio.gather(*accepting, return_exceptions=True)
        for sock in self._socks:  # after the accept loops left (no reader on them)
            sock.close()
        self._socks.clear()

    async def close(self) -> None:
        """Stop accepting; drop connections not routed yet and forwarded ones. Idempotent."""
        await self.close_listeners()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for half in list(self._links):
            for transport in (half.transport, half.peer.transport):
                if transport is not None:
                    transport.abort()
        self._links.clear()

    async def _accept_loop(self, lsock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        pause = 0.005
        while not self._closed:
            try:
                sock, _ = await loop.sock_accept(lsock)
            except OSError as e:
                if self._closed or e.errno not in _ACCEPT_RETRY:
                    if not self._closed:
                        log.error("client listener stopped: %s", e)
                    return
                log.warning("accept: %s; retrying in %.3fs", e, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
                continue
            pause = 0.005
            self._spawn(self._route(sock))

    async def _route(self, sock: socket.socket) -> None:
        try:
            sock.setblocking(False)
            _tune_accepted(sock)
            verdict = await self._sniff(sock)
            self.routed[verdict] = self.routed.get(verdict, 0) + 1
            if verdict == "grpc":
                if isinstance(self.grpc, GrpcTarget):
                    await self._forward(sock)
                else:
                    await self._serve_grpc(sock, self.grpc)
            elif verdict == "http" and self.http is not None:
                await self._serve_http(sock)
            else:
                _drop(sock)
        except asyncio.CancelledError:
            sock.close()
            raise
        except Exception as e:  # one connection's trouble never stops the listener
            log.debug("client connection dropped: %r", e)
            sock.close()

    async def _sniff(self, sock: socket.socket) -> Verdict:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.sniff_timeout
        classify = classify_tls if self.tls is not None else classify_plain
        size = 16 * 1024 + 5 if self.tls is not None else MAX_HTTP1_LINE
        pause = 0.001
        if not await self._readable(sock, deadline):
            return "reject"
        while True:
            try:
                data = sock.recv(size, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                if not await self._readable(sock, deadline):
                    return "reject"
                continue
            except OSError:
                return "reject"
            if not data:
                return "reject"  # closed before saying anything
            verdict = classify(data)
            if verdict != "more":
                return verdict
            if self.tls is not None:
                hello = parse_client_hello(data)
                if isinstance(hello, Incomplete):
                    size = max(size, min(hello.need, MAX_TLS_PEEK))
            if loop.time() >= deadline:
                return "reject"
            # The bytes seen stay queued (peeked), so the socket stays readable:
            # wait a little for the rest instead of spinning on readiness.
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)

    async def _readable(self, sock: socket.socket, deadline: float) -> bool:
        """Until ``sock`` has bytes to read (True) or the deadline passed (False)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        fd = sock.fileno()
        loop.add_reader(fd, ready)
        try:
            async with asyncio.timeout_at(deadline):
                await fut
        except TimeoutError:
            return False
        finally:
            loop.remove_reader(fd)
        return True

    async def _serve_grpc(self, sock: socket.socket, factory: Callable[[], asyncio.Protocol]) -> None:
        """A gRPC connection served in process (TLS, if any, ended here)."""
        loop = asyncio.get_running_loop()
        if self.tls is None:
            await loop.connect_accepted_socket(factory, sock)
            return
        try:
            await loop.connect_accepted_socket(factory, sock, ssl=self.grpc_tls or self.tls,
                                               ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
        except (ssl.SSLError, OSError, TimeoutError) as e:
            log.debug("TLS handshake with a gRPC client failed: %r", e)
            sock.close()

    async def _forward(self, sock: socket.socket) -> None:
        assert isinstance(self.grpc, GrpcTarget)
        loop = asyncio.get_running_loop()
        client = _Half(self)
        upstream = _Half(None)
        client.peer, upstream.peer = upstream, client
        try:
            await self.grpc.connect(lambda: upstream)
        except OSError as e:
            log.warning("cannot reach the gRPC server at %s: %s", self.grpc.grpc_address, e)
            _drop(sock)
            return
        try:
            await loop.connect_accepted_socket(lambda: client, sock)
        except BaseException:
            if upstream.transport is not None:
                upstream.transport.abort()
            raise

    async def _serve_http(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        assert self.http is not None
        if self.tls is None:
            await loop.connect_accepted_socket(self.http, sock)
            return
        try:
            await loop.connect_accepted_socket(self.http, sock, ssl=self.tls,
                                               ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
        except (ssl.SSLError, OSError, TimeoutError) as e:
            log.debug("TLS handshake with an HTTP client failed: %r", e)
            sock.close()


def internal_socket_path(directory: str, name: str) -> str | None:
    """A unix socket path in ``directory``, or None when too long for sun_path."""
    path = os.path.join(directory, name)
    return path if len(path.encode()) < 100 else None
