"""Election, RWLock, Semaphore, Barrier and STM against both servers."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from meshkit.client import Client, KeyValue
from meshkit.concurrency import (
    Barrier,
    Election,
    Isolation,
    LockTimeoutError,
    NoLeaderError,
    NotLeaderError,
    RWLock,
    Semaphore,
    Session,
    SessionLostError,
    STMConflictError,
    run_stm,
)


async def test_election_campaign_proclaim_resign_observe(client: Client, pfx: str) -> None:
    async with Session(client, ttl=10) as a, Session(client, ttl=10) as b, Session(client, ttl=10) as o:
        ea, eb, eo = Election(a, pfx), Election(b, pfx), Election(o, pfx)
        with pytest.raises(NoLeaderError):
            await eo.leader()
        seen: list[KeyValue] = []

        async def observe() -> None:
            async with contextlib.aclosing(eo.observe()) as it:
                async for kv in it:
                    seen.append(kv)
                    if kv.value == b"b1":
                        return

        obs = asyncio.create_task(observe())
        await asyncio.sleep(0.2)
        await ea.campaign("a1")
        assert ea.is_leader and ea.key == f"{pfx}/{a.lease_id:x}".encode()
        tb = asyncio.create_task(eb.campaign("b1"))
        await asyncio.sleep(0.3)
        assert not tb.done()
        await ea.proclaim("a2")
        assert (await eo.leader()).value == b"a2"
        with pytest.raises(NotLeaderError):
            await eb.proclaim("nope")
        await ea.resign()
        await asyncio.wait_for(tb, 5)
        assert eb.is_leader and (await eo.leader()).value == b"b1"
        with pytest.raises(NotLeaderError):
            await ea.proclaim("late")
        await asyncio.wait_for(obs, 5)
        assert [kv.value for kv in seen] == [b"a1", b"a2", b"b1"]
        assert [kv.key for kv in seen] == [ea_key := f"{pfx}/{a.lease_id:x}".encode(), ea_key, eb.key]
        await eb.resign()


async def test_campaign_gives_up_when_its_session_dies(client: Client, pfx: str) -> None:
    async with Session(client, ttl=10) as a, Session(client, ttl=5) as b:
        ea, eb = Election(a, pfx), Election(b, pfx)
        await ea.campaign("a")
        t = asyncio.create_task(eb.campaign("b"))
        await asyncio.sleep(0.2)
        await client.revoke(b.lease_id)
        with pytest.raises(SessionLostError):
            await asyncio.wait_for(t, 5)
        assert not eb.is_leader
        with pytest.raises(LockTimeoutError):
            async with Session(client, ttl=10) as c:
                await Election(c, pfx).campaign("c", timeout=0.3)
        assert [kv.key for kv in (await client.get(pfx + "/", prefix=True)).kvs] == [ea.key]
        await ea.resign()


async def test_rwlock_readers_share_writers_exclude(client: Client, pfx: str) -> None:
    async with Session(client, ttl=10) as s1, Session(client, ttl=10) as s2, Session(client, ttl=10) as s3, \
            Session(client, ttl=10) as s4:
        r1, r2 = RWLock(s1, pfx).read(), RWLock(s2, pfx).read()
        await r1.acquire(timeout=2)
        await r2.acquire(timeout=2)  # readers share
        w = RWLock(s3, pfx).write()
        tw = asyncio.create_task(w.acquire())
        await asyncio.sleep(0.3)
        r3 = RWLock(s4, pfx).read()
        with pytest.raises(LockTimeoutError):  # a reader queued behind a writer waits
            await r3.acquire(timeout=0.3)
        await r1.release()
        await asyncio.sleep(0.2)
        assert not tw.done()
        await r2.release()
        await asyncio.wait_for(tw, 5)
        tr = asyncio.create_task(r3.acquire())
        await asyncio.sleep(0.3)
        assert not tr.done()
        await w.release()
        await asyncio.wait_for(tr, 5)
        await r3.release()


async def test_semaphore_admits_limit_holders(client: Client, pfx: str) -> None:
    async with Session(client, ttl=10) as s1, Session(client, ttl=10) as s2, Session(client, ttl=10) as s3:
        a, b, c = Semaphore(s1, pfx, 2), Semaphore(s2, pfx, 2), Semaphore(s3, pfx, 2)
        await a.acquire(timeout=2)
        await b.acquire(timeout=2)
        with pytest.raises(LockTimeoutError):
            await c.acquire(timeout=0.3)
        assert len((await client.get(pfx + "/", prefix=True)).kvs) == 2
        tc = asyncio.create_task(c.acquire())
        await asyncio.sleep(0.2)
        assert not tc.done()
        await a.release()
        await asyncio.wait_for(tc, 5)
        await b.release()
        await c.release()


async def test_barrier(client: Client, pfx: str) -> None:
    bar = Barrier(client, pfx)
    await bar.wait(timeout=1)  # not raised: passes
    assert await bar.hold()
    assert not await bar.hold()
    waiter = asyncio.create_task(Barrier(client, pfx).wait(timeout=5))
    await asyncio.sleep(0.3)
    assert not waiter.done()
    await bar.release()
    await asyncio.wait_for(waiter, 5)


@pytest.mark.parametrize("iso", [Isolation.SERIALIZABLE_SNAPSHOT, Isolation.SERIALIZABLE,
                                 Isolation.REPEATABLE_READ])
async def test_stm_concurrent_transfers_keep_the_sum(client: Client, pfx: str, iso: Isolation) -> None:
    accounts = [f"{pfx}/acct{i}" for i in range(4)]
    for k in accounts:
        await client.put(k, "100")
    attempts = 0

    async def transfer(i: int) -> None:
        src, dst = accounts[i % 4], accounts[(i + 1) % 4]

        async def apply(stm) -> None:  # type: ignore[no-untyped-def]
            nonlocal attempts
            attempts += 1
            a = int(await stm.get(src) or b"0")
            b = int(await stm.get(dst) or b"0")
            await asyncio.sleep(0.01)  # widen the window for conflicts
            stm.put(src, str(a - 10))
            stm.put(dst, str(b + 10))

        await run_stm(client, apply, isolation=iso)

    await asyncio.gather(*(transfer(i) for i in range(12)))
    values = [int((await client.get(k)).value or b"0") for k in accounts]
    assert sum(values) == 400
    assert values == [100, 100, 100, 100]  # each account sent 3 x 10 and received 3 x 10
    assert attempts > 12  # there were conflicts, and they were retried


async def test_stm_read_committed_loses_updates_and_limits_attempts(client: Client, pfx: str) -> None:
    key = f"{pfx}/n"
    await client.put(key, "0")

    async def incr(stm) -> None:  # type: ignore[no-untyped-def]
        v = int(await stm.get(key) or b"0")
        await asyncio.sleep(0.05)
        stm.put(key, str(v + 1))

    await asyncio.gather(*(run_stm(client, incr, isolation=Isolation.READ_COMMITTED) for _ in range(5)))
    assert int((await client.get(key)).value or b"0") < 5  # no conflict checks at all

    async def always_conflict(stm) -> None:  # type: ignore[no-untyped-def]
        await stm.get(key)
        await client.put(key, "x")  # someone else writes what we read
        stm.put(key, "mine")

    with pytest.raises(STMConflictError):
        await run_stm(client, always_conflict, max_attempts=3)
    assert (await client.get(key)).value == b"x"
