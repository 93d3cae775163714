"""The blocking balancer (grpc's sync API) against the real etcd and `meshkit server`."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from meshkit.lb import BlockingBalancedChannel
from tests.tools.lb.backends import WHO, spread_ok
from tests.tools.lb.conftest import Fleet
from tests.tools.registry.conftest import Server


async def test_blocking_channel_spreads_fails_fast_and_follows_removal(
        server: Server, fleet: Fleet) -> None:
    for i in (1, 2, 3):
        await fleet.add(f"b{i}")

    def run() -> tuple[Counter[str], Counter[str], float, grpc.StatusCode]:
        with BlockingBalancedChannel([server.endpoint], "web", policy="p2c") as ch:
            ch.wait_for_instances(3, timeout=10)
            who = ch.unary_unary(WHO)
            with ThreadPoolExecutor(8) as pool:
                spread = Counter(pool.map(lambda _: who(b"", timeout=5).decode(), range(3000)))
            # Deregistration happens on the test's loop; wait for the balancer to see it.
            asyncio.run_coroutine_threadsafe(fleet.deregister("b3"), loop).result(10)
            ch.wait_for(lambda c: len(c.pool.candidates()) == 2, timeout=10)
            after = Counter(who(b"", timeout=5).decode() for _ in range(200))
            for b in ("b1", "b2"):
                asyncio.run_coroutine_threadsafe(fleet.deregister(b), loop).result(10)
            ch.wait_for(lambda c: not c.pool.candidates(), timeout=10)
            t0 = time.monotonic()
            with pytest.raises(grpc.RpcError) as ei:
                who(b"", timeout=10)
            return spread, after, time.monotonic() - t0, ei.value.code()

    loop = asyncio.get_running_loop()
    spread, after, took, code = await asyncio.to_thread(run)
    assert spread_ok(spread, {"b1": 1, "b2": 1, "b3": 1}), spread
    assert set(after) == {"b1", "b2"}
    assert code == grpc.StatusCode.UNAVAILABLE and took < 0.5
