"""Registrar against the real etcd and `meshkit server`."""

from __future__ import annotations

import asyncio
import time

from meshkit.client import Client
from meshkit.registry import Instance, Registrar, decode_value
from tests.tools.registry.conftest import Server, eventually

PREFIX = "meshkit/services/"


async def keys(c: Client, prefix: str = PREFIX) -> dict[str, int]:
    """key -> lease of every key under ``prefix``."""
    return {kv.key.decode(): kv.lease for kv in (await c.get(prefix, prefix=True)).kvs}


async def test_register_and_close_revokes(client: Client) -> None:
    inst = Instance("web", "127.0.0.1:8080", id="web-1", metadata={"k": "v"}, weight=3, zone="z1")
    async with Registrar(client, inst, ttl=30) as r:
        await r.wait_registered(10)
        res = await client.get(r.key)
        assert res.kvs[0].lease == r.lease_id != 0
        up = decode_value(res.kvs[0].value)
        assert up.addr == "127.0.0.1:8080" and up.metadata is None and up.meshkit["weight"] == 3
        assert (await client.time_to_live(r.lease_id)).ttl > 20
        lease = r.lease_id
    # Leaving revoked the lease: gone at once, not after 30 s.
    assert await keys(client) == {}
    assert (await client.time_to_live(lease)).ttl == -1


async def test_lost_lease_registers_again(client: Client, server: Server) -> None:
    async with Client([server.endpoint]) as other, \
            Registrar(client, Instance("web", "127.0.0.1:8080", id="a"), ttl=30) as r:
        await r.wait_registered(10)
        first = r.lease_id
        t0 = time.monotonic()
        await other.revoke(first)  # by someone else: the keep-alive hears TTL 0
        await eventually(lambda: _registered_on_new_lease(client, r, first), 10,
                         "registered again on a new lease")
        assert time.monotonic() - t0 < 5
        assert r.lease_losses == 1 and r.registrations == 2
        assert await keys(client) == {r.key: r.lease_id}


async def _registered_on_new_lease(c: Client, r: Registrar, old: int) -> bool:
    got = await keys(c)
    return r.lease_id not in (0, old) and got.get(r.key) == r.lease_id


async def test_same_id_is_one_key(client: Client) -> None:
    inst = Instance("web", "127.0.0.1:8080", id="same")
    a = Registrar(client, inst, ttl=30)
    await a.start()
    await a.wait_registered(10)
    # A restarted registrar (the old one not yet gone) takes over the same key.
    async with Registrar(client, inst, ttl=30) as b:
        await b.wait_registered(10)
        assert await keys(client) == {b.key: b.lease_id}
        # The old one withdrawing must not delete the new one's registration.
        await a.set_serving(False)
        assert await keys(client) == {b.key: b.lease_id}
        await a.close()
        assert await keys(client) == {b.key: b.lease_id}


async def test_withdraw_and_return_keep_the_lease(client: Client) -> None:
    async with Registrar(client, Instance("web", "127.0.0.1:8080", id="a"), ttl=30,
                         serving=False) as r:
        await asyncio.sleep(0.2)
        assert await keys(client) == {}
        await r.set_serving(True)
        lease = r.lease_id
        assert await keys(client) == {r.key: lease}
        await r.set_serving(False)
        assert await keys(client) == {}
        assert (await client.time_to_live(lease)).ttl > 0  # the lease is still kept
        await r.set_serving(True)
        assert await keys(client) == {r.key: lease}


async def test_survives_server_restart(server: Server) -> None:
    # The server is down longer than the TTL: the keep-alive declares the lease lost,
    # the registrar retries with backoff until the server is back, then registers again.
    async with Client([server.endpoint], timeout=2.0, dial_timeout=0.5) as c, \
            Registrar(c, Instance("web", "127.0.0.1:8080", id="a"), ttl=2) as r:
        await r.wait_registered(10)
        first = r.lease_id
        server.stop()
        await eventually(lambda: _lost(r), 10, "lease declared lost while the server is down")
        await asyncio.to_thread(server.restart)
        await eventually(lambda: _registered_on_new_lease(c, r, first), 20,
                         "registered again after the restart")
        # The old lease (restored by the restarted server) expires without taking the key.
        await asyncio.sleep(3.5)
        assert await keys(c) == {r.key: r.lease_id}
        assert r.registered


async def _lost(r: Registrar) -> bool:
    return r.lease_losses >= 1


def test_backoff_is_capped_and_jittered() -> None:
    import random

    from meshkit.registry import Backoff

    b = Backoff(initial=0.1, maximum=1.0, rng=random.Random(1))
    delays = [b.delay() for _ in range(8)]
    caps = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    assert all(c / 2 <= d <= c for d, c in zip(delays, caps, strict=True))
    b.reset()
    assert b.delay() <= 0.1
