"""A 3-member in-process cluster: election, replication, reads and writes on
every member, Status and MemberList everywhere."""

from __future__ import annotations

import asyncio

from tests.server.cluster.conftest import Cluster


async def test_writes_on_any_member_reach_all(cluster3: Cluster) -> None:
    c = cluster3
    leader = await c.wait_leader()
    for i, m in enumerate(c.members):
        async with c.client(m) as cl:
            await cl.put(f"k{i}".encode(), m.name.encode())
    # linearizable reads on every member see every acknowledged write
    for m in c.members:
        async with c.client(m) as cl:
            r = await cl.get(b"k", prefix=True)
            assert [kv.value for kv in r.kvs] == [b"m0", b"m1", b"m2"]
            st = await cl.status()
            assert st.leader == leader.id
            assert st.raft_term == leader.server.etcd.term  # type: ignore[union-attr]


async def test_member_list_has_everyone_with_client_urls(cluster3: Cluster) -> None:
    c = cluster3
    await c.wait_leader()
    want = sorted((m.name, f"http://127.0.0.1:{m.port}") for m in c.members)
    for m in c.members:
        async with c.client(m) as cl:
            for _ in range(100):
                ml = await cl.member_list()
                got = sorted((x.name, x.client_urls[0] if x.client_urls else "") for x in ml.members)
                if got == want:
                    break
                await asyncio.sleep(0.05)
            assert got == want
