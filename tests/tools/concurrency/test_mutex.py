"""Session and Mutex: etcd Go's layout and algorithm, timeouts, fencing, loss."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from meshkit.client import Client, Op
from meshkit.concurrency import (
    LockLostError,
    LockTimeoutError,
    Mutex,
    NotHeldError,
    Session,
    SessionLostError,
)


async def test_key_layout_and_fifo_handover(client: Client, pfx: str) -> None:
    async with Session(client, ttl=10) as a, Session(client, ttl=10) as b, Session(client, ttl=10) as c:
        ma, mb, mc = Mutex(a, pfx), Mutex(b, pfx), Mutex(c, pfx)
        await ma.lock()
        assert ma.key == f"{pfx}/{a.lease_id:x}".encode()
        got = await client.get(ma.key)
        assert got.kvs[0].lease == a.lease_id and got.kvs[0].create_revision == ma.token
        tb = asyncio.create_task(mb.lock())
        await asyncio.sleep(0.2)
        tc = asyncio.create_task(mc.lock())
        await asyncio.sleep(0.3)
        assert not tb.done() and not tc.done()
        await ma.unlock()
        await asyncio.wait_for(tb, 5)
        assert mb.held and not tc.done()
        assert mb.token > ma.token or ma.token == -1
        await mb.unlock()
        await asyncio.wait_for(tc, 5)
        assert mc.held
        await mc.unlock()
        assert (await client.get(pfx + "/", prefix=True)).kvs == []


async def test_lock_timeout_raises_and_leaves_no_key(client: Client, pfx: str) -> None:
    async with Session(client, ttl=10) as a, Session(client, ttl=10) as b:
        async with Mutex(a, pfx) as ma:
            mb = Mutex(b, pfx)
            entered = False
            with pytest.raises(LockTimeoutError):
                await mb.lock(timeout=0.3)
                entered = True
            assert not entered and not mb.held
            keys = [kv.key for kv in (await client.get(pfx + "/", prefix=True)).kvs]
            assert keys == [ma.key]
            with pytest.raises(NotHeldError):
                await mb.guarded_put(pfx + "-data", "x")


async def test_cancelled_lock_leaves_no_key(client: Client, pfx: str) -> None:
    async with Session(client, ttl=10) as a, Session(client, ttl=10) as b:
        async with Mutex(a, pfx) as ma:
            mb = Mutex(b, pfx)
            t = asyncio.create_task(mb.lock())
            await asyncio.sleep(0.3)
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            assert not mb.held
            keys = [kv.key for kv in (await client.get(pfx + "/", prefix=True)).kvs]
            assert keys == [ma.key]


async def test_try_lock(client: Client, pfx: str) -> None:
    async with Session(client, ttl=10) as a, Session(client, ttl=10) as b:
        ma, mb = Mutex(a, pfx), Mutex(b, pfx)
        assert await ma.try_lock()
        assert not await mb.try_lock()
        assert len((await client.get(pfx + "/", prefix=True)).kvs) == 1
        await ma.unlock()
        assert await mb.try_lock()
        await mb.unlock()


async def test_guarded_write_refuses_a_stale_token(client: Client, pfx: str) -> None:
    data = pfx + "-data"
    async with Session(client, ttl=10) as a, Session(client, ttl=10) as b:
        ma, mb = Mutex(a, pfx), Mutex(b, pfx)
        await ma.lock()
        res = await ma.guarded_put(data, "from-a")
        assert res.succeeded
        old_token = ma.token
        # A's lease is revoked behind its back (as if it expired while A was paused).
        await client.revoke(a.lease_id)
        await asyncio.wait_for(ma.lost.wait(), 2)  # signalled at once by the key's delete
        await mb.lock(timeout=5)
        assert mb.token > old_token
        with pytest.raises(LockLostError):
            await ma.guarded_put(data, "stale")
        assert (await client.get(data)).value == b"from-a"
        assert (await mb.guarded_txn(Op.put(data, "from-b"))).succeeded
        assert (await client.get(data)).value == b"from-b"
        await mb.unlock()
        await ma.unlock()


async def test_session_loss_is_signalled(client: Client, pfx: str) -> None:
    async with Session(client, ttl=5) as a:
        m = Mutex(a, pfx)
        await m.lock()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await client.revoke(a.lease_id)
        await asyncio.wait_for(m.lost.wait(), 2)
        assert loop.time() - t0 < 1.0
        with pytest.raises(LockLostError):
            await m.wait_lost()
        # The keeper learns at its next renewal (a third of the TTL).
        await asyncio.wait_for(a.lost.wait(), 5)
        with pytest.raises(SessionLostError):
            a.check()
        with contextlib.suppress(Exception):
            await m.unlock()


async def test_waiter_gives_up_when_its_session_dies(client: Client, pfx: str) -> None:
    async with Session(client, ttl=10) as a, Session(client, ttl=5) as b:
        async with Mutex(a, pfx):
            mb = Mutex(b, pfx)
            t = asyncio.create_task(mb.lock())
            await asyncio.sleep(0.2)
            await client.revoke(b.lease_id)
            with pytest.raises(SessionLostError):
                await asyncio.wait_for(t, 5)
            assert not mb.held


async def test_unlock_lets_the_session_lock_again(client: Client, pfx: str) -> None:
    async with Session(client, ttl=10) as a:
        m = Mutex(a, pfx)
        async with m:
            first = m.token
            assert m.held
        assert not m.held and not m.lost.is_set()
        async with m:
            assert m.token > first
