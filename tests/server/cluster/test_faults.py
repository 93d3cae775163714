"""Faults injected through the in-process transport: leader loss, an isolated
leader, lossy links. No acknowledged write is lost; a linearizable read never
returns stale data (an isolated old leader refuses instead)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from meshkit._internal.errors import EtcdError
from meshkit.client import Client
from tests.server.cluster.conftest import Cluster


async def _writer(c: Client, prefix: bytes, acked: list[bytes], stop: asyncio.Event) -> None:
    i = 0
    while not stop.is_set():
        key = prefix + b"%05d" % i
        i += 1
        try:
            await c.put(key, b"v")
        except Exception:
            await asyncio.sleep(0.02)
            continue
        acked.append(key)


@pytest.mark.slow
async def test_leader_stop_under_load_loses_no_acknowledged_write(cluster3: Cluster) -> None:
    c = cluster3
    old = await c.wait_leader()
    followers = [m for m in c.members if m is not old]
    acked: list[bytes] = []
    stop = asyncio.Event()
    async with c.client(*followers, timeout=3.0) as cl:
        w = asyncio.create_task(_writer(cl, b"w/", acked, stop))
        await asyncio.sleep(0.5)
        await c.stop(old)
        new = await c.wait_leader(among=followers)
        assert new is not old
        n = len(acked)
        for _ in range(200):  # writes continue under the new leader
            if len(acked) >= n + 20:
                break
            await asyncio.sleep(0.05)
        assert len(acked) >= n + 20
        stop.set()
        await w
        for m in followers:
            async with c.client(m) as one:
                r = await one.get(b"w/", prefix=True, keys_only=True)
                assert set(acked) <= {kv.key for kv in r.kvs}
    # the old leader comes back on its data dir and catches up
    await c.start(old)
    await c.wait_leader()
    async with c.client(old) as one:
        r = await one.get(b"w/", prefix=True, keys_only=True)
        assert set(acked) <= {kv.key for kv in r.kvs}


@pytest.mark.slow
async def test_isolated_leader_refuses_linearizable_reads_and_majority_continues(cluster3: Cluster) -> None:
    c = cluster3
    old = await c.wait_leader()
    rest = [m for m in c.members if m is not old]
    async with c.client(old) as cl:
        await cl.put(b"k", b"before")
    c.net.isolate(old.id)
    new = await c.wait_leader(among=rest)
    async with c.client(*rest) as cl:
        await cl.put(b"k", b"after")
    # the old leader must not answer a linearizable read with stale data
    async with c.client(old, timeout=1.5) as cl:
        with pytest.raises(Exception):  # noqa: B017 - timeout or unavailable
            await cl.get(b"k")
        # a serializable read is served locally (and may be stale, as in etcd)
        r = await cl.get(b"k", serializable=True)
        assert r.kvs[0].value == b"before"
    c.net.heal()
    await c.wait_leader()
    assert new.server is not None
    async with c.client(old) as cl:
        for _ in range(100):
            with contextlib.suppress(EtcdError, Exception):
                r = await cl.get(b"k")
                if r.kvs and r.kvs[0].value == b"after":
                    break
            await asyncio.sleep(0.05)
        assert r.kvs[0].value == b"after"


@pytest.mark.slow
async def test_lossy_links_still_converge(cluster3: Cluster) -> None:
    c = cluster3
    await c.wait_leader()
    c.net.drop_rate = 0.2
    c.net.delay = (0.0, 0.01)
    acked: list[bytes] = []
    stop = asyncio.Event()
    async with c.client(timeout=3.0) as cl:
        w = asyncio.create_task(_writer(cl, b"l/", acked, stop))
        await asyncio.sleep(1.5)
        stop.set()
        await w
    c.net.heal()
    assert acked
    await c.wait_leader()
    for m in c.members:
        async with c.client(m) as one:
            r = await one.get(b"l/", prefix=True, keys_only=True)
            assert set(acked) <= {kv.key for kv in r.kvs}


async def test_linearizable_reads_share_read_index_rounds(cluster3: Cluster) -> None:
    c = cluster3
    await c.wait_leader()
    follower = next(m for m in c.members if not m.server.etcd.is_leader())  # type: ignore[union-attr]
    etcd = follower.server.etcd  # type: ignore[union-attr]
    async with c.client(follower) as cl:
        await cl.put(b"x", b"1")
        before = etcd._read_seq
        await asyncio.gather(*(cl.get(b"x") for _ in range(50)))
        rounds = etcd._read_seq - before
        assert 1 <= rounds < 50
