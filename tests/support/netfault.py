"""Network faults between real server processes: an HTTP CONNECT proxy on loopback.

grpc-core honours the ``grpc_proxy`` environment variable for every target, 127.0.0.1
included: a member process started with ``grpc_proxy=http://127.0.0.1:X`` opens each
peer connection by sending ``CONNECT 127.0.0.1:<peer port> HTTP/1.1`` to X and then
tunnels HTTP/2 through it. :class:`NetFault` listens on one such port per member, so
every tunnel knows its source (the port it arrived on) and its destination (the
CONNECT target, a member's peer port), and it can cut the links between members:

* ``cut(a, b)``: ``a`` no longer reaches ``b``. Directed by who dials: ``a``'s
  connections to ``b`` carry ``a``'s Raft messages (``b``'s answers on them are only
  acknowledgements), ``b`` sends to ``a`` on connections it dials itself, untouched.
* ``heal(a, b)``, ``isolate(a)`` (every link from and to ``a``), ``heal_all()``.

A cut kills the pair's open tunnels and holds new ones: their CONNECT gets no answer
until the link is healed (then the tunnel is made and answered, like a SYN that got
through on a retry) or the dialer gives up. Why hold rather than refuse: with a
refused CONNECT every attempt fails at once, grpc answers every RPC UNAVAILABLE
without waiting and backs off exponentially (1 s, 1.6 s, 2.6 s, ... up to 2 min), so a
healed link would stay unused for seconds; a held attempt keeps the channel
CONNECTING, RPCs wait for their deadline as over a dead network, and the heal
completes the attempt at once. The peer RPCs that were in flight on a killed
tunnel fail, as on a connection reset.

Only member processes get ``grpc_proxy`` (see :meth:`NetFault.env`); the test
process's own environment never has it, so its clients reach the members directly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Coroutine, Mapping
from types import TracebackType
from typing import Any

Pair = tuple[str, str]  # (source member, destination member)

_MAX_HEADER = 8192
# Variables grpc-core reads to choose (or skip) a proxy; a member gets only its own.
_PROXY_VARS = ("grpc_proxy", "https_proxy", "http_proxy", "no_grpc_proxy", "no_proxy")


class _Tunnel:
    """One proxied connection: the dialer's side and the destination's."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.dead = False

    def kill(self) -> None:
        # abort, not close: no buffered bytes are flushed, like a connection reset
        self.dead = True
        self.client.transport.abort()
        self.upstream.transport.abort()


class NetFault:
    """The fault injector for members ``name -> peer port`` (the CONNECT targets)."""

    def __init__(self, peers: Mapping[str, int]) -> None:
        self.peers = dict(peers)
        self._by_port = {port: name for name, port in self.peers.items()}
        self.proxy_port: dict[str, int] = {}
        # per pair: tunnels made, bytes carried (both ways), CONNECTs held by a cut
        self.tunnels: Counter[Pair] = Counter()
        self.bytes: Counter[Pair] = Counter()
        self.held: Counter[Pair] = Counter()
        self._cut: set[Pair] = set()
        self._healed: dict[Pair, asyncio.Event] = {}
        self._open: dict[Pair, set[_Tunnel]] = {}
        self._conns: set[asyncio.StreamWriter] = set()
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._tg: asyncio.TaskGroup | None = None
        self._closed = False

    # ---- lifecycle --------------------------------------------------------------

    async def __aenter__(self) -> NetFault:
        tg = asyncio.TaskGroup()
        await tg.__aenter__()
        self._tg = tg
        for name in self.peers:
            await self._listen(name)
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop listening, drop every connection, end every task."""
        if self._closed:
            return
        self._closed = True
        for s in self._servers:
            s.close()
        for w in list(self._conns):
            w.transport.abort()
        for t in list(self._tasks):
            t.cancel()
        if self._tg is not None:
            tg, self._tg = self._tg, None
            await tg.__aexit__(None, None, None)
        for s in self._servers:
            await s.wait_closed()

    async def _listen(self, name: str) -> None:
        def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # the connection's task belongs to the task group, not to the asyncio server
            self._spawn(self._serve(name, reader, writer))

        server = await asyncio.start_server(accepted, "127.0.0.1", 0)
        self._servers.append(server)
        self.proxy_port[name] = int(server.sockets[0].getsockname()[1])

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._tg is None or self._closed:
            coro.close()
            return
        task = self._tg.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def env(self, name: str, base: Mapping[str, str]) -> dict[str, str]:
        """Member ``name``'s process environment: ``base`` without the variables that
        could choose another proxy or exempt 127.0.0.1, plus its own ``grpc_proxy``."""
        assert name in self.proxy_port, f"no proxy port for {name}: not a member the fault injector knows"
        env = {k: v for k, v in base.items() if k.lower() not in _PROXY_VARS}
        env["grpc_proxy"] = f"http://127.0.0.1:{self.proxy_port[name]}"
        return env

    # ---- faults -----------------------------------------------------------------

    def cut(self, a: str, b: str) -> None:
        """``a``'s connections to ``b`` are killed, new ones held until healed."""
        self._known(a, b)
        self._cut.add((a, b))
        self._healed_event(a, b).clear()
        for t in list(self._open.get((a, b), ())):
            t.kill()

    def heal(self, a: str, b: str) -> None:
        self._known(a, b)
        self._cut.discard((a, b))
        self._healed_event(a, b).set()

    def isolate(self, a: str) -> None:
        """Cut every link from and to ``a``."""
        for b in self.peers:
            if b != a:
                self.cut(a, b)
                self.cut(b, a)

    def heal_all(self) -> None:
        for pair in list(self._cut):
            self.heal(*pair)

    def is_cut(self, a: str, b: str) -> bool:
        return (a, b) in self._cut

    def _known(self, a: str, b: str) -> None:
        assert a in self.peers and b in self.peers and a != b, f"not a link between two members: {a} -> {b}"

    def _healed_event(self, a: str, b: str) -> asyncio.Event:
        ev = self._healed.get((a, b))
        if ev is None:
            ev = self._healed[(a, b)] = asyncio.Event()
            ev.set()
        return ev

    # ---- one connection ---------------------------------------------------------

    async def _serve(self, src: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        try:
            dst = await self._connect_request(reader, writer)
            if dst is None:
                return
            pair = (src, dst)
            upstream = await self._dial(pair, reader)
            if upstream is None:
                return
            up_reader, up_writer = upstream
            self._conns.add(up_writer)
            tunnel = _Tunnel(writer, up_writer)
            self._open.setdefault(pair, set()).add(tunnel)
            self.tunnels[pair] += 1
            try:
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._pump(reader, up_writer, pair, tunnel))
                    tg.create_task(self._pump(up_reader, writer, pair, tunnel))
            finally:
                self._open[pair].discard(tunnel)
                self._conns.discard(up_writer)
                tunnel.kill()
        finally:
            self._conns.discard(writer)
            writer.transport.abort()

    async def _connect_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str | None:
        """The member a CONNECT asks for; None (answered and closed) if it is not one."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            return None
        if len(head) > _MAX_HEADER:
            return None
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) != 3 or parts[0] != b"CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            return None
        host, _, port = parts[1].decode(errors="replace").rpartition(":")
        dst = self._by_port.get(int(port)) if port.isascii() and port.isdigit() else None
        if host != "127.0.0.1" or dst is None:
            writer.write(b"HTTP/1.1 403 Forbidden\r\n\r\n")  # loopback members only
            return None
        return dst

    async def _dial(self, pair: Pair, reader: asyncio.StreamReader,
                    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """The connection to the destination, once the link is up; None if the
        dialer gave up first (or the destination is not listening)."""
        while True:
            if pair in self._cut:
                self.held[pair] += 1
                if not await self._hold(pair, reader):
                    return None
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.peers[pair[1]])
            except OSError:
                return None  # the member is down: the dialer sees its connection closed
            if pair not in self._cut:
                return up_reader, up_writer
            up_writer.transport.abort()  # cut while dialing: hold again

    async def _hold(self, pair: Pair, reader: asyncio.StreamReader) -> bool:
        """Until the link is healed (True) or the dialer closes its connection (False).
        The dialer sends nothing before the CONNECT is answered (grpc waits for it)."""
        healed = asyncio.ensure_future(self._healed_event(*pair).wait())
        closed = asyncio.ensure_future(reader.read(1))
        try:
            await asyncio.wait((healed, closed), return_when=asyncio.FIRST_COMPLETED)
            return not closed.done()
        finally:
            for f in (healed, closed):
                f.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await f

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, pair: Pair,
                    tunnel: _Tunnel) -> None:
        try:
            while data := await src.read(65536):
                if tunnel.dead:  # (bytes read before the kill, still buffered)
                    break
                self.bytes[pair] += len(data)
                dst.write(data)
                await dst.drain()
        except OSError:
            pass  # a reset: the tunnel ends below like on EOF
        finally:
            tunnel.kill()  # either side ending ends the tunnel (gRPC never half-closes)
