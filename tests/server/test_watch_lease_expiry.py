"""A lease that expires deletes its keys through the log; watchers see the deletes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from meshkit.client import Client
from meshkit.client.types import EventType
from meshkit.server.embed import EmbeddedServer


async def test_expired_lease_deletes_reach_watchers_in_one_revision(tmp_path: Path) -> None:
    async with EmbeddedServer.for_test(tmp_path, 0) as srv, Client([srv.endpoint]) as c:
        lease = await c.grant(2)  # the minimum TTL with the default timings
        await c.put(b"svc/a", b"1", lease=lease.id)
        await c.put(b"svc/b", b"2", lease=lease.id)
        await c.put(b"svc/keep", b"3")
        start = (await c.get(b"svc/", prefix=True)).header.revision + 1
        async with c.watch(b"svc/", prefix=True, start_revision=start, prev_kv=True) as w:
            resp = await asyncio.wait_for(anext(aiter(w)), timeout=10)
        assert [(e.type, e.kv.key) for e in resp.events] == [
            (EventType.DELETE, b"svc/a"), (EventType.DELETE, b"svc/b")]
        revs = {e.kv.mod_revision for e in resp.events}
        assert revs == {start}
        assert [e.prev_kv.value for e in resp.events if e.prev_kv] == [b"1", b"2"]
        assert (await c.get(b"svc/", prefix=True)).kvs[0].key == b"svc/keep"
        assert (await c.time_to_live(lease.id)).ttl == -1
