"""Discovery against the real etcd and `meshkit server`: snapshot + watch, a storm of
registrations and removals, resync after compaction."""

from __future__ import annotations

import asyncio
import random

from meshkit.client import Client, EventType
from meshkit.registry import Change, Discovery, Instance, Registrar, encode_value, instance_key
from tests.client.proxy import TcpProxy
from tests.tools.registry.conftest import Server

PREFIX = "meshkit/services"


async def test_snapshot_then_changes(client: Client) -> None:
    await client.put(instance_key(PREFIX, "web", "old"),
                     encode_value(Instance("web", "127.0.0.1:1", id="old")))
    await client.put(instance_key(PREFIX, "db", "x"), encode_value(Instance("db", "127.0.0.1:2")))
    async with Discovery(client, "web") as d:
        assert [i.instance_id for i in d.instances()] == ["old"]
        stream = d.changes()
        heard: list[Change] = []
        remove = d.add_listener(heard.append)
        async with Registrar(client, Instance("web", "127.0.0.1:3", id="new", zone="z"), ttl=30) as r:
            await r.wait_registered(10)
            c = await stream.next(5)
            assert (c.kind, c.instance.zone, c.instance.addr) == ("added", "z", "127.0.0.1:3")
        c = await stream.next(5)
        assert (c.kind, c.key) == ("removed", r.key)
        # A value written by Go's endpoints.Manager is understood too.
        await client.put(instance_key(PREFIX, "web", "go"), b'{"Op":0,"Addr":"10.1.1.1:80","Metadata":null}')
        c = await stream.next(5)
        assert (c.kind, c.instance.addr, c.instance.weight) == ("added", "10.1.1.1:80", 1)
        remove()
        assert [x.kind for x in heard] == ["added", "removed", "added"]
        assert sorted(i.instance_id for i in d.instances()) == ["go", "old"]
        assert d.instances("db") == []


async def test_storm_ends_with_the_server_set_and_every_change_in_order(client: Client) -> None:
    rng = random.Random(7)
    async with Discovery(client, "web") as d:
        start = d.revision
        seen: list[Change] = []
        d.add_listener(seen.append)
        # A raw watch of the same range from the same revision: the reference order.
        raw = client.watch(d.watch_prefix, prefix=True, start_revision=start + 1)
        live: dict[str, Registrar] = {}

        async def flip(i: int) -> None:
            iid = f"i{i}"
            for _ in range(4):
                await asyncio.sleep(rng.random() * 0.05)
                if iid in live:
                    await live.pop(iid).close()
                else:
                    r = Registrar(client, Instance("web", f"127.0.0.1:{1000 + i}", id=iid,
                                                   weight=rng.randint(1, 9)), ttl=30)
                    live[iid] = r
                    await r.start()
                    await r.wait_registered(10)

        await asyncio.gather(*(flip(i) for i in range(25)))
        final = await client.get(d.watch_prefix, prefix=True)
        await d.wait_for(lambda d: d.revision >= final.header.revision, 10)
        # The cache is exactly the server's set.
        assert {k: v.addr for k, v in d.snapshot().items()} == {
            kv.key.decode(): _addr(kv.value) for kv in final.kvs}
        # Every change, in revision order, matches the raw event stream one for one.
        expected: list[tuple[int, str, str]] = []
        async with raw:
            async for resp in raw:
                for ev in resp.events:
                    expected.append((ev.kv.mod_revision, ev.kv.key.decode(),
                                     "removed" if ev.type == EventType.DELETE else "put"))
                if expected and expected[-1][0] >= final.header.revision:
                    break
        got = [(c.revision, c.key, "removed" if c.kind == "removed" else "put") for c in seen]
        assert got == expected
        assert len(got) >= 25 * 4 - 5  # a real storm: about 100 changes
        assert d.resyncs == 0
        for r in list(live.values()):
            await r.close()


def _addr(value: bytes) -> str:
    from meshkit.registry import decode_value

    return decode_value(value).addr


async def test_resync_after_compaction(server: Server, client: Client) -> None:
    proxy = await TcpProxy(server.endpoint).start()
    try:
        async with Client([proxy.endpoint], timeout=2.0, dial_timeout=0.5) as via_proxy, \
                Discovery(via_proxy, "web") as d:
            await client.put(instance_key(PREFIX, "web", "a"), encode_value(Instance("web", "127.0.0.1:1", id="a")))
            await client.put(instance_key(PREFIX, "web", "b"), encode_value(Instance("web", "127.0.0.1:2", id="b")))
            await d.wait_for(lambda d: len(d.instances()) == 2, 10)
            stream = d.changes()
            # Cut the discovery's connection; meanwhile change the set and compact.
            proxy.refuse = True
            proxy.cut()
            await client.delete(instance_key(PREFIX, "web", "a"))
            await client.put(instance_key(PREFIX, "web", "c"), encode_value(Instance("web", "127.0.0.1:3", id="c")))
            res = await client.put("unrelated", "x")
            await client.compact(res.header.revision)
            proxy.refuse = False
            await d.wait_for(lambda d: d.resyncs == 1, 15)
            assert sorted(i.instance_id for i in d.instances()) == ["b", "c"]
            changes = [await stream.next(5), await stream.next(5)]
            assert sorted((c.kind, c.instance.instance_id, c.resync) for c in changes) == [
                ("added", "c", True), ("removed", "a", True)]
            # And it follows changes again after the resync.
            await client.delete(instance_key(PREFIX, "web", "b"))
            c = await stream.next(5)
            assert (c.kind, c.instance.instance_id, c.resync) == ("removed", "b", False)
    finally:
        await proxy.stop()
