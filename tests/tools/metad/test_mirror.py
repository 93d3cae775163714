"""The mirror: replicas agree on data and version (a cluster revision, so it
survives restarts), deletes before the snapshot are dated, and a watch that lost
its history to a compaction re-reads a snapshot."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from meshkit.client import Client
from meshkit.metad import Metad
from tests.support.procs import ServerProc
from tests.tools.metad.conftest import callers, config, eventually, running_metad
from tests.tools.metad.test_api import load


async def test_replicas_answer_the_same_data_and_version(client: Client, prefix: str) -> None:
    cfg = config(prefix)
    async with running_metad(client, cfg) as a:
        await load(a)
        async with running_metad(client, cfg) as b, callers("127.0.0.2", "127.0.0.3") as cs:
            for c in cs:
                ra, rb = await c.get(a.port, "/self"), await c.get(b.port, "/self")
                assert (ra.body, ra.version) == (rb.body, rb.version)
            # unrelated writes elsewhere in the cluster do not move the version
            await client.put("/unrelated/key", "x")
            put = await client.put(f"{prefix}/nodes/2/name", "n2")
            await eventually(lambda: a.mirror.version == b.mirror.version == put.header.revision)
            ra, rb = await cs[0].get(a.port, "/self"), await cs[0].get(b.port, "/self")
            assert ra.body == rb.body and ra.version == rb.version == put.header.revision
    # a restarted metad answers the same version
    async with running_metad(client, cfg) as c2, callers("127.0.0.2") as (c,):
        assert (await c.get(c2.port, "/self")).version == put.header.revision


async def test_a_delete_before_the_snapshot_is_dated(client: Client, prefix: str) -> None:
    cfg = config(prefix)
    async with running_metad(client, cfg) as a:
        await load(a)
        d = await client.delete(f"{prefix}/nodes/1", prefix=True)
        await client.put("/unrelated/key", "y")
        await eventually(lambda: a.mirror.version == d.header.revision)
        async with running_metad(client, cfg) as b:
            # the snapshot's newest key is older than the delete: the replay dates it
            await eventually(lambda: b.mirror.version == d.header.revision)
            assert b.mirror.data.get(("nodes", "1")) is None


class TcpProxy:
    """A loopback TCP relay the test can cut (drop every connection, refuse new ones)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.open = True
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def cut(self) -> None:
        self.open = False
        for w in list(self._conns):
            w.transport.abort()
        self._conns.clear()

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if not self.open:
            w.transport.abort()
            return
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            w.transport.abort()
            return
        self._conns |= {w, uw}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(r, uw), pipe(ur, w))
        self._conns -= {w, uw}


@contextlib.asynccontextmanager
async def proxied_client(server: ServerProc) -> AsyncIterator[tuple[TcpProxy, Client]]:
    async with TcpProxy(server.client_port) as proxy, \
            Client([f"127.0.0.1:{proxy.port}"], timeout=3.0, dial_timeout=0.5) as c:
        yield proxy, c


async def test_compacted_watch_rereads_the_snapshot(server: ServerProc, client: Client,
                                                    prefix: str) -> None:
    async with proxied_client(server) as (proxy, pclient):
        async with Metad(pclient, config(prefix)) as m, callers("127.0.0.2") as (c,):
            await m.wait_ready(10)
            await load(m)
            poll = asyncio.ensure_future(c.get(m.port, "/self?wait=true&timeout=20"))
            await eventually(lambda: m.mirror.waiters == 1)
            proxy.cut()  # the mirror's watch stream drops; it cannot reconnect
            # meanwhile: a change, then history compacted past it
            put = await client.put(f"{prefix}/nodes/2/name", "changed-while-away")
            await client.put("/unrelated/compact-me", "z")
            latest = (await client.put("/unrelated/compact-me", "z2")).header.revision
            await client.compact(latest, physical=True)
            # served from memory meanwhile (stale, but served)
            r = await c.get(m.port, "/self/node/name")
            assert r.text == "node2"
            proxy.open = True  # the watch resumes from a compacted revision: re-read
            r = await poll
            assert r.text == "/node/ip\t192.168.1.2\n/node/name\tchanged-while-away\n"
            assert m.mirror.resyncs >= 1
            assert r.version >= put.header.revision
