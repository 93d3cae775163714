"""Watch through the hub: events, options, resume after a cut with no loss or repeat."""

from __future__ import annotations

import asyncio

import pytest

from meshkit.client import (
    Client,
    EventType,
    Op,
    WatchCanceledError,
    WatchCompactedError,
    Watcher,
    WatchResponse,
)
from tests.client.proxy import proxy_to


async def next_resp(w: Watcher, limit: float = 5.0) -> WatchResponse:
    return await asyncio.wait_for(w.__anext__(), limit)


async def collect_events(w: Watcher, n: int, limit: float = 10.0) -> list[tuple[bytes, int]]:
    """(value, mod_revision) of the next n events."""
    out: list[tuple[bytes, int]] = []
    async with asyncio.timeout(limit):
        while len(out) < n:
            resp = await w.__anext__()
            out.extend((e.kv.value, e.kv.mod_revision) for e in resp.events)
    return out


async def test_put_and_delete_events(client: Client) -> None:
    async with client.watch(b"k", prev_kv=True) as w:
        await w.wait_created(5)
        p = await client.put(b"k", b"1")
        await client.put(b"other", b"x")
        await client.delete(b"k")
        r1 = await next_resp(w)
        assert [(e.type, e.kv.key, e.kv.value) for e in r1.events] == [(EventType.PUT, b"k", b"1")]
        assert r1.events[0].prev_kv is None and r1.header.revision == p.header.revision
        r2 = await next_resp(w)
        e = r2.events[0]
        assert e.type == EventType.DELETE and e.kv.key == b"k" and e.kv.value == b""
        assert e.prev_kv is not None and e.prev_kv.value == b"1"
    # leaving the context cancels: iteration ends
    with pytest.raises(StopAsyncIteration):
        await next_resp(w)


async def test_prefix_range_and_from_key(client: Client) -> None:
    async with client.watch(b"p/", prefix=True) as wp, client.watch(b"a", b"c") as wr, \
            client.watch(b"y", from_key=True) as wf:
        for w in (wp, wr, wf):
            await w.wait_created(5)
        for k in (b"p/1", b"b", b"p/2", b"c", b"z"):
            await client.put(k, b"v")
        assert [e.kv.key for e in (await next_resp(wp)).events] == [b"p/1"]
        assert [e.kv.key for e in (await next_resp(wp)).events] == [b"p/2"]
        assert [e.kv.key for e in (await next_resp(wr)).events] == [b"b"]
        assert [e.kv.key for e in (await next_resp(wf)).events] == [b"z"]
    assert client._watch_hub is not None and client._watch_hub.connects == 1  # one stream


async def test_filters(client: Client) -> None:
    async with client.watch(b"k", filters=["noput"]) as nop, client.watch(b"k", filters=["nodelete"]) as nod:
        await nop.wait_created(5)
        await nod.wait_created(5)
        await client.put(b"k", b"1")
        await client.delete(b"k")
        assert (await next_resp(nop)).events[0].type == EventType.DELETE
        assert (await next_resp(nod)).events[0].type == EventType.PUT
    with pytest.raises(ValueError):
        client.watch(b"k", filters=["nothing"])  # type: ignore[list-item]


async def test_history_from_start_revision_and_txn_events_share_a_response(client: Client) -> None:
    first = await client.put(b"h", b"1")
    await client.put(b"h", b"2")
    await client.txn().then(Op.put(b"h", b"3"), Op.put(b"h2", b"x")).commit()
    async with client.watch(b"h", prefix=True, start_revision=first.header.revision) as w:
        got = await collect_events(w, 4)
        assert [v for v, _ in got] == [b"1", b"2", b"3", b"x"]
        assert got[2][1] == got[3][1]  # one revision
    async with client.watch(b"h", prefix=True) as w:
        await w.wait_created(5)
        await client.txn().then(Op.put(b"h", b"4"), Op.put(b"h2", b"y")).commit()
        r = await next_resp(w)
        assert [e.kv.value for e in r.events] == [b"4", b"y"]


async def test_many_watchers_one_stream_and_cancel(client: Client) -> None:
    ws = [client.watch(f"m{i}") for i in range(20)]
    for w in ws:
        await w.wait_created(5)
    ids = {w.watch_id for w in ws}
    assert len(ids) == 20
    await ws[0].cancel()
    await ws[0].cancel()
    for i in range(20):
        await client.put(f"m{i}", str(i))
    for i, w in enumerate(ws[1:], start=1):
        assert (await next_resp(w)).events[0].kv.value == str(i).encode()
    with pytest.raises(StopAsyncIteration):
        await next_resp(ws[0])
    for w in ws:
        await w.cancel()
    assert client._watch_hub is not None and client._watch_hub.connects == 1


async def test_cancel_before_created(client: Client) -> None:
    w = client.watch(b"x")
    await w.cancel()
    async with client.watch(b"x") as w2:
        await w2.wait_created(5)
        await client.put(b"x", b"1")
        assert (await next_resp(w2)).events[0].kv.value == b"1"


async def test_fragmented_responses_are_joined(client: Client) -> None:
    big = b"v" * (600 * 1024)
    first = await client.put(b"f/0", big)
    for i in range(1, 4):
        await client.put(f"f/{i}", big)
    # Catching up from history sends the 4 events in one response of 2.4 MiB: over the
    # server's watch send limit (etcd: max-request-bytes + 512 KiB = 2 MiB), so it fragments.
    async with client.watch(b"f/", prefix=True, fragment=True, start_revision=first.header.revision) as w:
        r = await next_resp(w, 10)
        assert [e.kv.key for e in r.events] == [b"f/0", b"f/1", b"f/2", b"f/3"]
        assert all(e.kv.value == big for e in r.events)
    assert client._watch_hub is not None and client._watch_hub.fragments >= 1


async def test_compacted_start_raises(client: Client) -> None:
    revs = [(await client.put(b"c", str(i))).header.revision for i in range(3)]
    await client.compact(revs[-1])
    w = client.watch(b"c", start_revision=revs[0])
    with pytest.raises(WatchCompactedError) as ei:
        await next_resp(w)
    assert ei.value.compact_revision == revs[-1]
    with pytest.raises(StopAsyncIteration):
        await next_resp(w)


async def test_invalid_watch_is_canceled(client: Client) -> None:
    w = client.watch(b"b", b"a")  # range_end before key: etcd refuses the create
    with pytest.raises(WatchCanceledError):
        await next_resp(w)


async def _writer(client: Client, prefix: str, n: int, delay: float) -> list[int]:
    revs = []
    for i in range(n):
        revs.append((await client.put(f"{prefix}{i}", str(i))).header.revision)
        await asyncio.sleep(delay)
    return revs


@pytest.mark.parametrize("how", ["cut_same_endpoint", "failover_next_endpoint"])
async def test_resume_after_cut_loses_and_repeats_nothing(endpoint: str, how: str) -> None:
    n = 60
    async with proxy_to(endpoint) as p, Client([endpoint], timeout=5.0) as writer:
        eps = [p.endpoint] if how == "cut_same_endpoint" else [p.endpoint, endpoint]
        async with Client(eps, timeout=5.0) as c, c.watch(b"r/", prefix=True) as w:
            await w.wait_created(5)
            task = asyncio.create_task(_writer(writer, "r/", n, 0.01))
            got = await collect_events(w, 10)
            if how == "cut_same_endpoint":
                assert p.cut() >= 1
            else:
                await p.stop()
            got += await collect_events(w, n - 10)
            revs = await task
            assert [rev for _, rev in got] == revs  # all, in order, once
            assert [v for v, _ in got] == [str(i).encode() for i in range(n)]
            with pytest.raises(TimeoutError):
                await next_resp(w, 0.3)  # and nothing more
            hub = c._watch_hub
            assert hub is not None and hub.connects == 2
            if how == "failover_next_endpoint":
                assert c.current_endpoint == endpoint


async def test_events_during_outage_are_delivered_after(endpoint: str) -> None:
    async with proxy_to(endpoint) as p, Client([endpoint]) as writer, \
            Client([p.endpoint], timeout=5.0) as c, c.watch(b"o/", prefix=True) as w:
        await w.wait_created(5)
        await writer.put(b"o/0", b"0")
        assert await collect_events(w, 1)
        p.refuse = True
        p.cut()
        revs = [(await writer.put(f"o/{i}", str(i))).header.revision for i in range(1, 6)]
        await asyncio.sleep(0.3)
        p.refuse = False
        got = await collect_events(w, 5)
        assert [r for _, r in got] == revs


async def test_compacted_resume_raises(endpoint: str) -> None:
    async with proxy_to(endpoint) as p, Client([endpoint]) as writer, \
            Client([p.endpoint], timeout=5.0) as c, c.watch(b"z") as w:
        await w.wait_created(5)
        await writer.put(b"z", b"0")
        await collect_events(w, 1)
        p.refuse = True
        p.cut()
        for i in range(1, 4):
            last = await writer.put(b"z", str(i))
        await writer.compact(last.header.revision)
        p.refuse = False
        with pytest.raises(WatchCompactedError) as ei:
            await next_resp(w, 10)
        assert ei.value.compact_revision == last.header.revision


async def test_from_now_watch_resumes_from_creation_revision(endpoint: str) -> None:
    """A watch from "now" that saw no event yet must not miss writes made while it was down."""
    async with proxy_to(endpoint) as p, Client([endpoint]) as writer, \
            Client([p.endpoint], timeout=5.0) as c, c.watch(b"n") as w:
        await w.wait_created(5)
        p.refuse = True
        p.cut()
        put = await writer.put(b"n", b"during")
        await asyncio.sleep(0.2)
        p.refuse = False
        r = await next_resp(w, 10)
        assert r.events[0].kv.mod_revision == put.header.revision


async def test_client_close_ends_watches(endpoint: str) -> None:
    c = Client([endpoint])
    w = c.watch(b"k")
    await w.wait_created(5)
    await c.close()
    with pytest.raises(StopAsyncIteration):
        await next_resp(w)
    with pytest.raises(RuntimeError):
        c.watch(b"k")
