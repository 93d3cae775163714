"""The Lease service of an in-process member, through gRPC (etcd 3.4 answers)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from meshkit._internal.clock import FakeClock
from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.api.etcdserverpb import rpc_pb2_grpc as rpc
from meshkit.server.embed import EmbeddedServer
from meshkit.server.lease import EXPIRY_CHECK_INTERVAL, MAX_LEASE_TTL
from meshkit.server.mvcc import EventType


@dataclass
class Conn:
    srv: EmbeddedServer
    kv: rpc.KVStub
    lease: rpc.LeaseStub


@asynccontextmanager
async def serve(data: Path, clock: FakeClock | None = None) -> AsyncIterator[Conn]:
    srv = EmbeddedServer.for_test(data, 0)
    if clock is not None:
        srv.etcd.clock = clock
    async with srv, grpc.aio.insecure_channel(srv.endpoint) as ch:
        yield Conn(srv, rpc.KVStub(ch), rpc.LeaseStub(ch))


async def keep_alive(c: Conn, *ids: int) -> list[pb.LeaseKeepAliveResponse]:
    call = c.lease.LeaseKeepAlive(iter([pb.LeaseKeepAliveRequest(ID=i) for i in ids]))
    return [r async for r in call]


async def wait_for(pred: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not pred():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def advance(clock: FakeClock, seconds: float) -> None:
    """Move the fake clock in expiry-check steps, letting the member react."""
    steps = int(seconds / EXPIRY_CHECK_INTERVAL + 0.5)
    for _ in range(steps):
        clock.advance(EXPIRY_CHECK_INTERVAL)
        await asyncio.sleep(0.02)


async def test_grant_revoke_ttl_leases(tmp_path: Path) -> None:
    async with serve(tmp_path) as c:
        g = await c.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=30))
        assert g.ID > 0 and g.TTL == 30 and g.error == ""
        assert g.header.revision == 1 and g.header.member_id == c.srv.etcd.member_id
        g2 = await c.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=1, ID=0x1234))
        assert (g2.ID, g2.TTL) == (0x1234, 2)  # raised to the minimum TTL (election timeout)
        assert (await c.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=0, ID=5))).TTL == 2
        assert (await c.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=-7, ID=-3))).TTL == 2

        t = await c.lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=g.ID))
        assert t.ID == g.ID and t.grantedTTL == 30 and t.TTL == 29  # truncated, as Go's int64(seconds)
        t = await c.lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=999, keys=True))
        assert (t.ID, t.TTL, t.grantedTTL, list(t.keys)) == (999, -1, 0, [])
        # soonest expiry first
        ls = await c.lease.LeaseLeases(pb.LeaseLeasesRequest())
        assert [x.ID for x in ls.leases] == [0x1234, 5, -3, g.ID]

        r = await c.lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=0x1234))
        assert r.header.revision == 1  # no keys: no new revision
        assert 0x1234 not in [x.ID for x in (await c.lease.LeaseLeases(pb.LeaseLeasesRequest())).leases]


@pytest.mark.parametrize(
    ("req", "code", "message"),
    [
        (pb.LeaseGrantRequest(TTL=MAX_LEASE_TTL + 1, ID=9), grpc.StatusCode.OUT_OF_RANGE,
         "etcdserver: too large lease TTL"),
        (pb.LeaseGrantRequest(TTL=5, ID=7), grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: lease already exists"),
        (pb.LeaseRevokeRequest(ID=404), grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found"),
        (pb.LeaseRevokeRequest(ID=0), grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found"),
        (pb.PutRequest(key=b"k", value=b"v", lease=404), grpc.StatusCode.NOT_FOUND,
         "etcdserver: requested lease not found"),
    ],
)
async def test_errors(tmp_path: Path, req: object, code: grpc.StatusCode, message: str) -> None:
    async with serve(tmp_path) as c:
        await c.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=5, ID=7))
        call = {
            pb.LeaseGrantRequest: c.lease.LeaseGrant,
            pb.LeaseRevokeRequest: c.lease.LeaseRevoke,
            pb.PutRequest: c.kv.Put,
        }[type(req)]
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await call(req)
        assert (ei.value.code(), ei.value.details()) == (code, message)
        assert (await c.kv.Range(pb.RangeRequest(key=b"k"))).count == 0
        assert c.srv.etcd.store.current_revision == 1


async def test_max_ttl_is_accepted(tmp_path: Path) -> None:
    async with serve(tmp_path) as c:
        g = await c.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=MAX_LEASE_TTL))
        assert g.TTL == MAX_LEASE_TTL


async def test_keys_follow_their_lease(tmp_path: Path) -> None:
    async with serve(tmp_path) as c:
        await c.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=60, ID=1))
        await c.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=60, ID=2))

        async def keys(lid: int) -> list[bytes]:
            return list((await c.lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=lid, keys=True))).keys)

        for k in (b"b", b"a", b"c", b"d"):
            await c.kv.Put(pb.PutRequest(key=k, value=b"v", lease=1))
        assert await keys(1) == [b"a", b"b", b"c", b"d"]
        assert list((await c.lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=1))).keys) == []
        await c.kv.Put(pb.PutRequest(key=b"a", value=b"v2", lease=2))  # moves
        await c.kv.Put(pb.PutRequest(key=b"b", value=b"v2"))  # detaches
        await c.kv.Put(pb.PutRequest(key=b"c", value=b"v2", ignore_lease=True))  # stays
        await c.kv.DeleteRange(pb.DeleteRangeRequest(key=b"d"))  # detaches
        assert await keys(1) == [b"c"]
        assert await keys(2) == [b"a"]
        txn = pb.TxnRequest(success=[
            pb.RequestOp(request_put=pb.PutRequest(key=b"t1", value=b"x", lease=2)),
            pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=b"a")),
            pb.RequestOp(request_put=pb.PutRequest(key=b"c", value=b"x", lease=2)),
        ])
        assert (await c.kv.Txn(txn)).succeeded
        assert await keys(1) == []
        assert await keys(2) == [b"c", b"t1"]
        # a txn that fails its lease check changes nothing
        bad = pb.TxnRequest(success=[
            pb.RequestOp(request_put=pb.PutRequest(key=b"z", value=b"x", lease=2)),
            pb.RequestOp(request_put=pb.PutRequest(key=b"y", value=b"x", lease=77)),
        ])
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await c.kv.Txn(bad)
        assert ei.value.details() == "etcdserver: requested lease not found"
        assert await keys(2) == [b"c", b"t1"]
        kvs = (await c.kv.Range(pb.RangeRequest(key=b"c"))).kvs
        assert kvs[0].lease == 2


async def test_revoke_deletes_all_keys_in_one_revision(tmp_path: Path) -> None:
    async with serve(tmp_path) as c:
        await c.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=60, ID=10))
        for k in (b"k3", b"k1", b"k2"):
            await c.kv.Put(pb.PutRequest(key=k, value=b"v", lease=10))
        await c.kv.Put(pb.PutRequest(key=b"other", value=b"v"))
        before = c.srv.etcd.store.current_revision
        r = await c.lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=10))
        assert r.header.revision == before + 1
        events = c.srv.etcd.store.events(before + 1)
        assert [(e.type, e.kv.key, e.kv.mod_revision) for e in events] == [
            (EventType.DELETE, b"k1", before + 1),
            (EventType.DELETE, b"k2", before + 1),
            (EventType.DELETE, b"k3", before + 1),
        ]
        rng = await c.kv.Range(pb.RangeRequest(key=b"\0", range_end=b"\0"))
        assert [kv.key for kv in rng.kvs] == [b"other"]
        t = await c.lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=10))
        assert t.TTL == -1


async def test_keep_alive(tmp_path: Path) -> None:
    async with serve(tmp_path) as c:
        await c.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=10, ID=1))
        resps = await keep_alive(c, 1, 404, 0, 1)
        assert [(r.ID, r.TTL) for r in resps] == [(1, 10), (404, 0), (0, 0), (1, 10)]
        assert all(r.header.member_id == c.srv.etcd.member_id for r in resps)


async def test_keep_alive_renews_and_expiry_is_pushed_back(tmp_path: Path) -> None:
    clock = FakeClock()
    async with serve(tmp_path, clock) as c:
        await c.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=5, ID=1))
        await c.kv.Put(pb.PutRequest(key=b"k", value=b"v", lease=1))
        for _ in range(4):
            await advance(clock, 3)
            assert [(r.ID, r.TTL) for r in await keep_alive(c, 1)] == [(1, 5)]
        t = await c.lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=1))
        assert t.TTL == 5
        assert (await c.kv.Range(pb.RangeRequest(key=b"k"))).count == 1


async def test_expiry_revokes_through_the_log_in_one_revision(tmp_path: Path) -> None:
    clock = FakeClock()
    async with serve(tmp_path, clock) as c:
        s = c.srv.etcd
        await c.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=3, ID=1))
        await c.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=4, ID=2))
        for k in (b"a", b"b", b"c"):
            await c.kv.Put(pb.PutRequest(key=k, value=b"v", lease=1))
        await c.kv.Put(pb.PutRequest(key=b"d", value=b"v", lease=2))
        rev = s.store.current_revision
        await advance(clock, 2.5)
        assert s.lessor.exists(1)
        applied = s.applied_index
        await advance(clock, 0.5)
        await wait_for(lambda: not s.lessor.exists(1))
        assert s.applied_index == applied + 1  # one log entry
        assert [(e.type, e.kv.key, e.kv.mod_revision) for e in s.store.events(rev + 1)] == [
            (EventType.DELETE, b"a", rev + 1), (EventType.DELETE, b"b", rev + 1), (EventType.DELETE, b"c", rev + 1),
        ]
        assert s.lessor.exists(2)
        await advance(clock, 1)
        await wait_for(lambda: not s.lessor.exists(2))
        assert [(e.type, e.kv.key, e.kv.mod_revision) for e in s.store.events(rev + 2)] == [
            (EventType.DELETE, b"d", rev + 2),
        ]


async def test_keep_alive_of_an_expired_lease_waits_for_its_revocation(tmp_path: Path) -> None:
    clock = FakeClock()
    async with serve(tmp_path, clock) as c:
        s = c.srv.etcd
        await c.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=3, ID=1))
        real_find = s.lessor.find_expired
        s.lessor.find_expired = lambda limit=500: []  # type: ignore[method-assign]
        await advance(clock, 3)
        ka = asyncio.create_task(keep_alive(c, 1))
        await asyncio.sleep(0.3)
        assert not ka.done()  # expired, revocation not applied yet: the renewal waits
        s.lessor.find_expired = real_find  # type: ignore[method-assign]
        await advance(clock, 0.5)
        resps = await asyncio.wait_for(ka, 5)
        assert [(r.ID, r.TTL) for r in resps] == [(1, 0)]
        assert not s.lessor.exists(1)


async def test_expiry_with_the_real_clock(tmp_path: Path) -> None:
    async with serve(tmp_path) as c:
        g = await c.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=2))
        await c.kv.Put(pb.PutRequest(key=b"e1", value=b"v", lease=g.ID))
        await c.kv.Put(pb.PutRequest(key=b"e2", value=b"v", lease=g.ID))
        t0 = time.monotonic()
        while (await c.kv.Range(pb.RangeRequest(key=b"e", range_end=b"f"))).count:
            assert time.monotonic() - t0 < 5, "lease keys not deleted in time"
            await asyncio.sleep(0.05)
        assert time.monotonic() - t0 >= 1.5
        t = await c.lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=g.ID))
        assert t.TTL == -1
        assert [(r.ID, r.TTL) for r in await keep_alive(c, g.ID)] == [(g.ID, 0)]


async def test_restart_restores_leases_and_gives_a_fresh_ttl(tmp_path: Path) -> None:
    clock = FakeClock()
    async with serve(tmp_path, clock) as c:
        await c.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=10, ID=1))
        await c.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=20, ID=2))
        await c.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=30, ID=3))
        await c.kv.Put(pb.PutRequest(key=b"x", value=b"v", lease=1))
        await c.kv.Put(pb.PutRequest(key=b"y", value=b"v", lease=1))
        await c.kv.Put(pb.PutRequest(key=b"z", value=b"v", lease=2))
        await c.kv.Put(pb.PutRequest(key=b"y", value=b"v"))  # detached before the restart
        await c.lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=3))
        await advance(clock, 8)
        rev = c.srv.etcd.store.current_revision
    clock.advance(1000)  # down far longer than any TTL
    async with serve(tmp_path, clock) as c:
        await wait_for(lambda: c.srv.etcd.lessor.is_primary)
        ls = await c.lease.LeaseLeases(pb.LeaseLeasesRequest())
        assert [x.ID for x in ls.leases] == [1, 2]
        t = await c.lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=1, keys=True))
        # a fresh TTL plus the election timeout (etcd's promotion)
        assert (t.TTL, t.grantedTTL, list(t.keys)) == (11, 10, [b"x"])
        t = await c.lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=2, keys=True))
        assert (t.TTL, list(t.keys)) == (21, [b"z"])
        await advance(clock, 5)
        assert c.srv.etcd.store.current_revision == rev
        await advance(clock, 6.5)
        await wait_for(lambda: not c.srv.etcd.lessor.exists(1))
        assert (await c.kv.Range(pb.RangeRequest(key=b"x"))).count == 0
        assert (await c.kv.Range(pb.RangeRequest(key=b"y"))).count == 1
    async with serve(tmp_path, clock) as c:
        await wait_for(lambda: c.srv.etcd.lessor.is_primary)
        assert [x.ID for x in (await c.lease.LeaseLeases(pb.LeaseLeasesRequest())).leases] == [2]
