"""Leases: grant/revoke/time-to-live/leases, and keep-alive that never keeps a dead lease."""

from __future__ import annotations

import asyncio
import time

import pytest

from meshkit.client import Client, LeaseLostError, LeaseNotFoundError
from tests.client.proxy import proxy_to


async def test_grant_ttl_leases_revoke(client: Client) -> None:
    g = await client.grant(30)
    assert g.id > 0 and g.ttl == 30
    g2 = await client.grant(40, id=0x1234)
    assert g2.id == 0x1234
    await client.put(b"lk", b"v", lease=g.id)
    t = await client.time_to_live(g.id, keys=True)
    assert t.id == g.id and t.granted_ttl == 30 and 0 < t.ttl <= 30 and t.keys == [b"lk"]
    assert (await client.time_to_live(g.id)).keys == []
    assert set((await client.leases()).ids) == {g.id, 0x1234}
    await client.revoke(g.id)
    assert (await client.get(b"lk")).count == 0
    assert (await client.time_to_live(g.id)).ttl == -1
    assert (await client.leases()).ids == [0x1234]
    with pytest.raises(LeaseNotFoundError):
        await client.revoke(g.id)


async def test_keep_alive_keeps_a_short_lease(client: Client) -> None:
    g = await client.grant(2)  # etcd may raise a tiny TTL to its minimum
    await client.put(b"ka", b"v", lease=g.id)
    async with client.keep_alive(g.id) as ka:
        assert ka.ttl == g.ttl and ka.renewals == 1
        await asyncio.sleep(6)
        assert not ka.lost.is_set()
        assert ka.renewals >= 6 / (g.ttl / 3) - 2
        assert (await client.time_to_live(g.id)).ttl > 0
        assert (await client.get(b"ka")).count == 1


async def test_revoke_elsewhere_signals_lost(endpoint: str, client: Client) -> None:
    g = await client.grant(3)
    async with Client([endpoint]) as other, client.keep_alive(g.id) as ka:
        await other.revoke(g.id)
        t0 = time.monotonic()
        with pytest.raises(LeaseLostError) as ei:
            await asyncio.wait_for(ka.wait_lost(), 5)
        assert time.monotonic() - t0 <= g.ttl / 3 + 1.0  # at the next renewal
        assert ei.value.lease_id == g.id and "TTL 0" in ei.value.reason
        assert ka.lost.is_set() and ka.ttl == -1


async def test_revoke_by_owner_signals_lost_at_once(client: Client) -> None:
    g = await client.grant(30)
    async with client.keep_alive(g.id) as ka:
        await client.revoke(g.id)
        assert ka.lost.is_set()
        with pytest.raises(LeaseLostError):
            await ka.wait_lost()


async def test_keep_alive_of_unknown_lease_fails_on_enter(client: Client) -> None:
    with pytest.raises(LeaseLostError):
        async with client.keep_alive(0x777):
            pass


async def test_lost_when_renewals_fail_until_expiry(endpoint: str) -> None:
    async with proxy_to(endpoint) as p, Client([p.endpoint], timeout=2.0) as c:
        g = await c.grant(3)
        async with c.keep_alive(g.id) as ka:
            p.refuse = True
            p.cut()
            t0 = time.monotonic()
            with pytest.raises(LeaseLostError) as ei:
                await asyncio.wait_for(ka.wait_lost(), g.ttl + 3)
            assert time.monotonic() - t0 <= g.ttl + 0.5  # no later than the expiry
            assert "before its TTL ran out" in ei.value.reason


async def test_keep_alive_survives_a_cut_and_fails_over(endpoint: str) -> None:
    async with proxy_to(endpoint) as p, Client([p.endpoint, endpoint], timeout=3.0) as c:
        g = await c.grant(3)
        async with c.keep_alive(g.id) as ka:
            p.cut()
            await asyncio.sleep(1.5)
            await p.stop()
            await asyncio.sleep(3)
            assert not ka.lost.is_set()
            assert (await c.time_to_live(g.id)).ttl > 0
