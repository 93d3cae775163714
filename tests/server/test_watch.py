"""The Watch service through gRPC against an in-process server.

Response shapes were checked side by side against the real etcd 3.4.23: ids
(auto from 0, client-chosen, duplicate refused with watch_id -1), cancel
answers, progress responses (watch_id -1 at the current revision), compaction
cancels (header revision 0, compact_revision set, no reason) and fragments.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.api.etcdserverpb import rpc_pb2_grpc as stubs
from meshkit.server.api import watch as watch_api
from meshkit.server.embed import EmbeddedServer

C = pb.WatchCreateRequest


class RawStream:
    """One Watch call driven by hand: send() requests, recv() responses."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.q: asyncio.Queue[pb.WatchRequest | None] = asyncio.Queue()
        self.call: Any = stubs.WatchStub(channel).Watch(self._gen())

    async def _gen(self) -> AsyncIterator[pb.WatchRequest]:
        while True:
            r = await self.q.get()
            if r is None:
                return
            yield r

    def create(self, **kw: Any) -> None:
        self.q.put_nowait(pb.WatchRequest(create_request=C(**kw)))

    def cancel(self, wid: int) -> None:
        self.q.put_nowait(pb.WatchRequest(cancel_request=pb.WatchCancelRequest(watch_id=wid)))

    def progress(self) -> None:
        self.q.put_nowait(pb.WatchRequest(progress_request=pb.WatchProgressRequest()))

    def half_close(self) -> None:
        self.q.put_nowait(None)

    async def recv(self, limit: float = 5.0) -> pb.WatchResponse:
        r = await asyncio.wait_for(self.call.read(), limit)
        assert r is not grpc.aio.EOF  # type: ignore[attr-defined]
        return r  # type: ignore[no-any-return]


@pytest.fixture
async def srv(tmp_path: Path) -> AsyncIterator[EmbeddedServer]:
    async with EmbeddedServer.for_test(tmp_path, 0) as s:
        yield s


@pytest.fixture
async def chan(srv: EmbeddedServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(srv.endpoint) as ch:
        yield ch


async def put(ch: grpc.aio.Channel, key: bytes, value: bytes = b"v", lease: int = 0) -> int:
    r = await stubs.KVStub(ch).Put(pb.PutRequest(key=key, value=value, lease=lease))
    return int(r.header.revision)


def evs(r: pb.WatchResponse) -> list[tuple[int, bytes, bytes, int, bytes | None]]:
    return [(e.type, e.kv.key, e.kv.value, e.kv.mod_revision,
             e.prev_kv.value if e.HasField("prev_kv") else None) for e in r.events]


async def test_ids_cancel_and_progress_shapes(srv: EmbeddedServer, chan: grpc.aio.Channel) -> None:
    rev = await put(chan, b"x")
    s = RawStream(chan)
    s.create(key=b"a")
    s.create(key=b"b")
    s.create(key=b"c", watch_id=5)
    s.create(key=b"c", watch_id=5)
    s.create(key=b"z", range_end=b"a")
    s.create(key=b"d")
    got = [await s.recv() for _ in range(6)]
    assert [(r.watch_id, r.created, r.canceled, r.cancel_reason) for r in got] == [
        (0, True, False, ""), (1, True, False, ""), (5, True, False, ""),
        (-1, True, True, "mvcc: duplicate watch ID provided on the WatchStream"),
        (-1, True, True, "mvcc: watcher range is empty"),
        (2, True, False, ""),
    ]
    h = got[0].header
    assert (h.revision, h.cluster_id, h.member_id) == (rev, srv.etcd.cluster_id, srv.etcd.member_id)
    assert h.raft_term == srv.etcd.term
    s.cancel(99)  # unknown: etcd answers nothing
    s.cancel(1)
    r = await s.recv()
    assert (r.watch_id, r.canceled, r.created, r.header.revision) == (1, True, False, rev)
    s.progress()
    r = await s.recv()
    assert (r.watch_id, r.created, r.canceled, list(r.events), r.header.revision) == (-1, False, False, [], rev)
    # the canceled watcher gets nothing, the others get their events
    await put(chan, b"b")
    rev_a = await put(chan, b"a")
    r = await s.recv()
    assert (r.watch_id, evs(r)) == (0, [(0, b"a", b"v", rev_a, None)])
    s.call.cancel()


async def test_history_txn_atomic_prev_kv_and_from_key(chan: grpc.aio.Channel) -> None:
    kv = stubs.KVStub(chan)
    r1 = await put(chan, b"p/a", b"1")
    ops = [pb.RequestOp(request_put=pb.PutRequest(key=b"p/%d" % i, value=b"t")) for i in range(5)]
    r2 = (await kv.Txn(pb.TxnRequest(success=ops))).header.revision
    r3 = (await kv.DeleteRange(pb.DeleteRangeRequest(key=b"p/", range_end=b"p0"))).header.revision
    s = RawStream(chan)
    s.create(key=b"p/", range_end=b"p0", start_revision=r1, prev_kv=True)
    s.create(key=b"p/3", range_end=b"\0", start_revision=r1)
    got4 = [await s.recv() for _ in range(4)]
    created = [r for r in got4 if r.created]
    assert len(created) == 2 and all(r.header.revision == r3 for r in created)
    hist = {r.watch_id: r for r in got4 if not r.created}
    # the whole history in one batch (etcd's catch-up), header = current revision
    assert hist[0].header.revision == r3
    e = evs(hist[0])
    assert e[0] == (0, b"p/a", b"1", r1, None)
    assert [x[3] for x in e[1:6]] == [r2] * 5
    deletes = e[6:]
    assert [(x[0], x[1], x[4]) for x in deletes] == [
        (1, b"p/0", b"t"), (1, b"p/1", b"t"), (1, b"p/2", b"t"), (1, b"p/3", b"t"),
        (1, b"p/4", b"t"), (1, b"p/a", b"1")]
    assert [x[1] for x in evs(hist[1])] == [b"p/a", b"p/3", b"p/4", b"p/3", b"p/4", b"p/a"]
    # live: a txn's events share one response
    r4 = (await kv.Txn(pb.TxnRequest(success=ops[2:]))).header.revision
    got = {}
    for _ in range(2):
        r = await s.recv()
        got[r.watch_id] = r
    assert [x[3] for x in evs(got[0])] == [r4] * 3 and got[0].header.revision == r4
    assert [(x[1], x[3]) for x in evs(got[1])] == [(b"p/3", r4), (b"p/4", r4)]
    s.call.cancel()


async def test_compacted_start_revision(chan: grpc.aio.Channel) -> None:
    for i in range(5):
        rev = await put(chan, b"k", b"%d" % i)
    await stubs.KVStub(chan).Compact(pb.CompactionRequest(revision=rev - 1))
    s = RawStream(chan)
    s.create(key=b"k", start_revision=rev - 2)
    r = await s.recv()
    assert r.created and not r.canceled and r.header.revision == rev
    r = await s.recv()
    assert (r.watch_id, r.canceled, r.compact_revision, r.header.revision, r.cancel_reason) == (
        0, True, rev - 1, 0, "")
    assert r.header.cluster_id != 0
    s.create(key=b"k", start_revision=rev - 1)  # == compact revision: fine
    await s.recv()
    r = await s.recv()
    assert [x[3] for x in evs(r)] == [rev - 1, rev]
    s.call.cancel()


async def test_half_close_keeps_watching(chan: grpc.aio.Channel) -> None:
    s = RawStream(chan)
    s.create(key=b"k")
    await s.recv()
    s.half_close()
    await asyncio.sleep(0.1)
    rev = await put(chan, b"k")
    r = await s.recv()
    assert evs(r) == [(0, b"k", b"v", rev, None)]
    s.call.cancel()


async def test_stream_end_removes_its_watchers(srv: EmbeddedServer, chan: grpc.aio.Channel) -> None:
    ws = srv.etcd.watchable  # type: ignore[attr-defined]
    s = RawStream(chan)
    for i in range(10):
        s.create(key=b"k%d" % i, start_revision=1 if i % 2 else 0)
    for _ in range(10):
        await s.recv()
    assert len(ws.synced) + len(ws.unsynced) == 10
    s.call.cancel()
    async with asyncio.timeout(5):
        while len(ws.synced) + len(ws.unsynced) or ws._streams:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_progress_notify_interval(tmp_path: Path) -> None:
    async with EmbeddedServer.for_test(tmp_path, 0, watch_progress_notify_interval_s=0.3) as srv, \
            grpc.aio.insecure_channel(srv.endpoint) as ch:
        s = RawStream(ch)
        s.create(key=b"p", progress_notify=True)
        s.create(key=b"q")
        await s.recv()
        await s.recv()
        r = await s.recv(2)
        assert (r.watch_id, list(r.events), r.created, r.header.revision) == (0, [], False, 1)
        rev = await put(ch, b"p")
        r = await s.recv(2)
        while not r.events:  # a tick may have raced with the put
            r = await s.recv(2)
        assert evs(r)[0][3] == rev
        r = await s.recv(2)
        assert (r.watch_id, list(r.events), r.header.revision) == (0, [], rev)
        s.call.cancel()


async def test_fragments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # etcd cuts at max-request-bytes + 512 KiB; drop the overhead to test small.
    monkeypatch.setattr(watch_api, "GRPC_OVERHEAD_BYTES", 0)
    async with EmbeddedServer.for_test(tmp_path, 0, max_request_bytes=2000) as srv, \
            grpc.aio.insecure_channel(srv.endpoint) as ch:
        first = 0
        for i in range(10):
            rev = await put(ch, b"f/%d" % i, b"v" * 300)
            first = first or rev
        s = RawStream(ch)
        s.create(key=b"f/", range_end=b"f0", start_revision=first, fragment=True)
        s.create(key=b"f/", range_end=b"f0", start_revision=first)
        parts: dict[int, list[pb.WatchResponse]] = {0: [], 1: []}
        while not parts[0] or parts[0][-1].fragment or not parts[1]:
            r = await s.recv()
            if not r.created:
                parts[r.watch_id].append(r)
        assert [p.fragment for p in parts[0]][-1] is False
        assert len(parts[0]) > 1 and all(p.fragment for p in parts[0][:-1])
        assert all(p.ByteSize() < 2000 or len(p.events) == 1 for p in parts[0])
        joined = [e for p in parts[0] for e in p.events]
        assert joined == list(parts[1][0].events) and len(joined) == 10
        assert len(parts[1]) == 1 and not parts[1][0].fragment
        assert srv is not None
        s.call.cancel()


async def test_lease_revoke_deletes_are_delivered(chan: grpc.aio.Channel) -> None:
    lease = stubs.LeaseStub(chan)
    try:
        g = await lease.LeaseGrant(pb.LeaseGrantRequest(TTL=60))
    except grpc.aio.AioRpcError as e:  # pragma: no cover - until the Lease service lands
        pytest.skip(f"Lease service not available: {e.code()}")
    await put(chan, b"l/a", b"1", g.ID)
    await put(chan, b"l/b", b"2", g.ID)
    s = RawStream(chan)
    s.create(key=b"l/", range_end=b"l0", prev_kv=True)
    await s.recv()
    await lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=g.ID))
    r = await s.recv()
    assert [(x[0], x[1], x[4]) for x in evs(r)] == [(1, b"l/a", b"1"), (1, b"l/b", b"2")]
    assert len({x[3] for x in evs(r)}) == 1  # one revision, one response
    s.call.cancel()


@pytest.mark.timeout(180)
async def test_stalled_watcher_blocks_nobody(srv: EmbeddedServer, chan: grpc.aio.Channel) -> None:
    """A stream that never reads while 20k events (20 MB) are written: the writes
    finish promptly, another watcher gets everything as it happens, and once the
    stalled one reads again it receives all 20k events in order, none twice."""
    ws = srv.etcd.watchable  # type: ignore[attr-defined]
    n_txn, per_txn = 400, 50
    async with grpc.aio.insecure_channel(srv.endpoint) as ch2:
        stalled = RawStream(ch2)
        stalled.create(key=b"s/", range_end=b"s0")
        assert (await stalled.recv()).created
        live = RawStream(chan)
        live.create(key=b"s/", range_end=b"s0")
        assert (await live.recv()).created
        got_live: list[int] = []

        async def read_live() -> None:
            while len(got_live) < n_txn * per_txn:
                r = await live.recv(30)
                got_live.extend(e.kv.mod_revision for e in r.events)

        reader = asyncio.get_running_loop().create_task(read_live())
        kv = stubs.KVStub(chan)
        value = b"x" * 1000
        t0 = time.monotonic()
        revs = []
        for t in range(n_txn):
            ops = [pb.RequestOp(request_put=pb.PutRequest(key=b"s/%d/%d" % (t, i), value=value))
                   for i in range(per_txn)]
            revs.append((await kv.Txn(pb.TxnRequest(success=ops))).header.revision)
        write_time = time.monotonic() - t0
        await asyncio.wait_for(reader, 30)
        assert got_live == [r for r in revs for _ in range(per_txn)]
        assert ws.victims >= 1, "the stalled watcher never left the synced group"
        assert write_time < 60
        # resume reading the stalled stream
        got: list[tuple[int, bytes]] = []
        async with asyncio.timeout(60):
            while len(got) < n_txn * per_txn:
                r = await stalled.recv(30)
                assert not r.canceled
                got.extend((e.kv.mod_revision, e.kv.key) for e in r.events)
        assert got == [(rv, b"s/%d/%d" % (t, i)) for t, rv in enumerate(revs) for i in range(per_txn)]
        # and it is live again
        rev = await put(chan, b"s/after")
        r = await stalled.recv()
        assert [e.kv.mod_revision for e in r.events] == [rev]
        stalled.call.cancel()
        live.call.cancel()
