"""A tiny loopback TCP proxy the tests put between a client and a server, then cut."""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target`` ("host:port").

    ``cut()`` aborts every open connection (RST); ``refuse = True`` makes new
    connections close at once (the endpoint looks down); ``drop_replies = True``
    swallows server-to-client bytes (the request goes through, the answer never comes).
    """

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.refuse = False
        self.drop_replies = False
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> TcpProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port or self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refuse:
            writer.transport.abort()
            return
        self.accepted += 1
        try:
            ur, uw = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, uw)
        self._conns.add(pair)
        t1 = asyncio.create_task(self._pump(reader, uw, replies=False))
        t2 = asyncio.create_task(self._pump(ur, writer, replies=True))
        self._tasks.update((t1, t2))
        try:
            await asyncio.wait([t1, t2], return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._conns.discard(pair)
            for t in (t1, t2):
                t.cancel()
            writer.transport.abort()
            uw.transport.abort()
            self._tasks.difference_update((t1, t2))

    async def _pump(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, *, replies: bool) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                data = await r.read(65536)
                if not data:
                    return
                if replies and self.drop_replies:
                    continue
                w.write(data)
                await w.drain()

    def cut(self) -> int:
        """Abort every open connection; returns how many were cut."""
        n = len(self._conns)
        for a, b in list(self._conns):
            a.transport.abort()
            b.transport.abort()
        return n

    async def stop(self) -> None:
        """Stop listening and cut everything (the port then refuses connections)."""
        if self._server is not None:
            self._server.close()
            self.cut()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None
        for t in list(self._tasks):
            t.cancel()


@contextlib.asynccontextmanager
async def proxy_to(target: str):  # type: ignore[no-untyped-def]
    p = await TcpProxy(target).start()
    try:
        yield p
    finally:
        await p.stop()
