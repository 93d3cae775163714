"""Lease renewals and TimeToLive asked of a follower are answered by the leader."""

from __future__ import annotations

from tests.server.cluster.conftest import Cluster


async def test_keepalive_and_ttl_on_a_follower(cluster3: Cluster) -> None:
    c = cluster3
    await c.wait_leader()
    follower = next(m for m in c.members if not m.server.etcd.is_leader())  # type: ignore[union-attr]
    async with c.client(follower) as cl:
        g = await cl.grant(30)
        await cl.put(b"leased", b"v", lease=g.id)
        async with cl.keep_alive(g.id) as ka:
            assert ka.ttl == 30
        ttl = await cl.time_to_live(g.id, keys=True)
        assert ttl.granted_ttl == 30 and 0 < ttl.ttl <= 30
        assert ttl.keys == [b"leased"]
        missing = await cl.time_to_live(12345)
        assert missing.ttl == -1
