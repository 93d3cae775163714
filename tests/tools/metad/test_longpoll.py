"""Long poll: ?wait=true wakes on a change of the requested subtree, &prev_version=N
answers at once when it changed since N, and &timeout= bounds the wait."""

from __future__ import annotations

import asyncio
import time

from meshkit.client import Client
from meshkit.metad import Metad
from tests.tools.metad.conftest import callers, eventually
from tests.tools.metad.test_api import load


async def test_wait_wakes_on_change_of_own_self(metad: Metad, client: Client, prefix: str) -> None:
    await load(metad)
    async with callers("127.0.0.2") as (c,):
        before = await c.get(metad.port, "/self")
        poll = asyncio.ensure_future(c.get(metad.port, "/self?wait=true&timeout=10"))
        await eventually(lambda: metad.mirror.waiters == 1)
        t0 = time.monotonic()
        put = await client.put(f"{prefix}/nodes/2/name", "renamed")
        r = await poll
        assert time.monotonic() - t0 < 3
        assert r.status == 200
        assert r.text == "/node/ip\t192.168.1.2\n/node/name\trenamed\n"
        assert r.version == put.header.revision > before.version
        assert "X-Metad-Wait" not in r.headers


async def test_wait_times_out_and_ignores_other_hosts(metad: Metad, client: Client,
                                                      prefix: str) -> None:
    await load(metad)
    async with callers("127.0.0.2") as (c,):
        before = await c.get(metad.port, "/self")
        poll = asyncio.ensure_future(c.get(metad.port, "/self?wait=true&timeout=1"))
        await eventually(lambda: metad.mirror.waiters == 1)
        t0 = time.monotonic()
        await client.put(f"{prefix}/nodes/3/name", "not yours")  # another host's node
        r = await poll
        elapsed = time.monotonic() - t0
        assert 0.5 < elapsed < 4
        assert r.status == 200 and r.text == before.text
        assert r.headers["X-Metad-Wait"] == "timeout"
        # a caller's own changes after prev_version answer at once
        await client.put(f"{prefix}/nodes/2/ip", "10.0.0.2")
        await eventually(lambda: metad.mirror.version > before.version)
        t0 = time.monotonic()
        r = await c.get(metad.port, f"/self?wait=true&prev_version={before.version}&timeout=5")
        assert time.monotonic() - t0 < 2
        assert "/node/ip\t10.0.0.2\n" in r.text
        # prev_version == the current version waits (until the timeout here)
        t0 = time.monotonic()
        r2 = await c.get(metad.port, f"/self?wait=true&prev_version={r.version}&timeout=0.5")
        assert time.monotonic() - t0 >= 0.4
        assert r2.headers["X-Metad-Wait"] == "timeout" and r2.version == r.version


async def test_wait_on_a_data_path(metad: Metad, client: Client, prefix: str) -> None:
    await load(metad)
    async with callers("127.0.0.3") as (c,):
        poll = asyncio.ensure_future(c.get(metad.port, "/nodes/6/ip?wait=true&timeout=10"))
        await eventually(lambda: metad.mirror.waiters == 1)
        await client.put(f"{prefix}/nodes/6/name", "hidden from 127.0.0.3")  # not readable: no wake
        await asyncio.sleep(0.3)
        assert not poll.done()
        await client.put(f"{prefix}/nodes/6/ip", "192.168.9.6")
        r = await poll
        assert r.text == "192.168.9.6"


async def test_bad_long_poll_parameters_are_400(metad: Metad) -> None:
    await load(metad)
    async with callers("127.0.0.2") as (c,):
        for q in ("timeout=abc", "timeout=-1", "timeout=inf", "prev_version=x"):
            r = await c.get(metad.port, f"/self?wait=true&{q}")
            assert r.status == 400, q
        assert metad.mirror.waiters == 0
