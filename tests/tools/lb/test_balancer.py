"""The pure-Python balancer (grpc.aio) against the real etcd and `meshkit server` as
the registry store, with real gRPC backends on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import grpc
import pytest

from meshkit.client import Client
from meshkit.lb import BalancedChannel
from meshkit.registry import Discovery, Instance, encode_value, instance_key
from tests.tools.lb.backends import SLOW, WHO, spread_ok
from tests.tools.lb.conftest import Fleet


async def _calls(ch: BalancedChannel, n: int, concurrency: int = 8) -> Counter[str]:
    who = ch.unary_unary(WHO)
    got: Counter[str] = Counter()

    async def worker(k: int) -> None:
        for _ in range(k):
            got[(await who(b"", timeout=5)).decode()] += 1

    await asyncio.gather(*(worker(n // concurrency) for _ in range(concurrency)))
    return got


async def _ready(ch: BalancedChannel, n: int, timeout: float = 10) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while len(ch.pool.candidates()) < n:
            await ch.pool.wait_changed()


@pytest.mark.parametrize("policy", ["round_robin", "p2c"])
async def test_even_spread(client: Client, fleet: Fleet, policy: str) -> None:
    for i in (1, 2, 3):
        await fleet.add(f"b{i}")
    async with BalancedChannel(client, "web", policy=policy,  # type: ignore[arg-type]
                               options=[]) as ch:
        await _ready(ch, 3)
        got = await _calls(ch, 3200, concurrency=16)
    assert sum(got.values()) == 3200
    assert spread_ok(got, {"b1": 1, "b2": 1, "b3": 1}), got


async def test_weighted_split(client: Client, fleet: Fleet) -> None:
    for i, w in ((1, 1), (2, 2), (3, 5)):
        await fleet.add(f"b{i}", weight=w)
    async with BalancedChannel(client, "web", policy="weighted") as ch:
        await _ready(ch, 3)
        got = await _calls(ch, 3200)
    assert spread_ok(got, {"b1": 1, "b2": 2, "b3": 5}), got


async def test_removal_mid_run_drains_and_a_new_server_gets_traffic_within_a_second(
        client: Client, fleet: Fleet) -> None:
    for i in (1, 2, 3):
        await fleet.add(f"b{i}")
    async with BalancedChannel(client, "web") as ch:
        await _ready(ch, 3)
        who, slow = ch.unary_unary(WHO), ch.unary_unary(SLOW)
        # Calls in flight on b3: the round robin puts one of three slow calls there.
        slow_calls = [asyncio.ensure_future(slow(b"", timeout=20)) for _ in range(3)]
        b3 = fleet.backends["b3"]
        async with asyncio.timeout(10):
            await b3.slow_started.wait()
        failures: list[BaseException] = []
        got: Counter[str] = Counter()
        stop = asyncio.Event()
        b4_seen = asyncio.Event()

        async def load() -> None:
            while not stop.is_set():
                try:
                    ident = (await who(b"", timeout=5)).decode()
                    got[ident] += 1
                    if ident == "b4":
                        b4_seen.set()
                except grpc.aio.AioRpcError as e:
                    failures.append(e)

        runners = [asyncio.ensure_future(load()) for _ in range(4)]
        try:
            await asyncio.sleep(0.3)
            await fleet.deregister("b3")  # the sidecar's drain: the key goes first
            async with asyncio.timeout(10):
                while any(e.instance.instance_id == "b3" and not e.withdrawn for e in ch.endpoints()):
                    await ch.pool.wait_changed()
            drained = next(e for e in ch.endpoints() if e.instance.instance_id == "b3")
            picked = drained.calls
            await asyncio.sleep(0.3)
            assert drained.calls == picked  # no new call after the withdrawal
            assert b3.in_flight == 1  # the call in flight was not cancelled
            assert drained.withdrawn and not drained.closed and drained.in_flight == 1
            for b in fleet.backends.values():
                b.release.set()
            answers = await asyncio.gather(*slow_calls)
            assert sorted(a.decode() for a in answers) == ["b1", "b2", "b3"]
            async with asyncio.timeout(10):  # drained: its sub-channel is closed
                while any(e.instance.instance_id == "b3" for e in ch.endpoints()):
                    await ch.pool.wait_changed()
            await b3.stop(grace=1)
            # A new server gets traffic within a second of registering.
            await fleet.add("b4", register=False)
            t0 = time.monotonic()
            await fleet.register("b4")
            async with asyncio.timeout(1.0):
                await b4_seen.wait()
            reached = time.monotonic() - t0
        finally:
            stop.set()
            for b in fleet.backends.values():
                b.release.set()
            await asyncio.gather(*runners, *slow_calls, return_exceptions=True)
    assert failures == []
    assert reached < 1.0
    assert got["b1"] > 0 and got["b2"] > 0


async def test_no_instance_fails_fast_with_unavailable(client: Client, fleet: Fleet) -> None:
    async with BalancedChannel(client, "web") as ch:
        t0 = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await ch.unary_unary(WHO)(b"", timeout=10)
        assert time.monotonic() - t0 < 0.5
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "no instance is registered" in (ei.value.details() or "")
        # Streaming calls fail the same way.
        with pytest.raises(grpc.aio.AioRpcError) as es:
            async for _ in ch.unary_stream(WHO)(b""):
                pass
        assert es.value.code() == grpc.StatusCode.UNAVAILABLE
        # When the only instance goes, calls fail fast again.
        await fleet.add("b1")
        await _ready(ch, 1)
        assert await ch.unary_unary(WHO)(b"", timeout=5) == b"b1"
        await fleet.deregister("b1")
        async with asyncio.timeout(10):
            while ch.pool.candidates():
                await ch.pool.wait_changed()
        with pytest.raises(grpc.aio.AioRpcError) as e2:
            await ch.unary_unary(WHO)(b"", timeout=10)
        assert e2.value.code() == grpc.StatusCode.UNAVAILABLE
        assert ch.failed_fast == 3


async def test_local_zone_is_preferred_then_left_when_it_empties(client: Client, fleet: Fleet) -> None:
    await fleet.add("a1", zone="a")
    await fleet.add("a2", zone="a")
    await fleet.add("b1", zone="b")
    async with BalancedChannel(client, "web", local_zone="a") as ch:
        await _ready(ch, 2)
        got = await _calls(ch, 400)
        assert set(got) == {"a1", "a2"} and spread_ok(got, {"a1": 1, "a2": 1}), got
        await fleet.deregister("a1")
        await fleet.deregister("a2")
        async with asyncio.timeout(10):
            while any(e.instance.zone == "a" for e in ch.pool.candidates()):
                await ch.pool.wait_changed()
        got = await _calls(ch, 48)
        assert got == Counter({"b1": 48})


async def test_unhealthy_and_draining_instances_get_no_calls(client: Client, fleet: Fleet) -> None:
    await fleet.add("b1")
    b2 = await fleet.add("b2")
    await fleet.add("b3", weight=0)  # registered, draining: weight 0
    async with BalancedChannel(client, "web", health_check=True, health_interval=0.1) as ch:
        await _ready(ch, 2)
        got = await _calls(ch, 200)
        assert set(got) == {"b1", "b2"}, got
        b2.serving = False  # its grpc.health.v1 check now answers NOT_SERVING
        async with asyncio.timeout(10):
            while len(ch.pool.candidates()) != 1:
                await ch.pool.wait_changed()
        got = await _calls(ch, 96)
        assert got == Counter({"b1": 96})
        b2.serving = True
        await _ready(ch, 2)
        # A server that dies without deregistering: its connection fails, no more calls.
        await b2.stop(0)
        async with asyncio.timeout(10):
            while len(ch.pool.candidates()) != 1:
                await ch.unary_unary(WHO)(b"", timeout=5)
                await asyncio.sleep(0.01)
        got = await _calls(ch, 96)
        assert got == Counter({"b1": 96})


async def test_protect_threshold_spreads_when_most_fail_their_checks(
        client: Client, fleet: Fleet) -> None:
    for i in (1, 2, 3, 4):
        await fleet.add(f"b{i}")
    async with BalancedChannel(client, "web", protect_threshold=0.5, protect_window=30) as ch, \
            BalancedChannel(client, "web") as plain:
        await _ready(ch, 4)
        await _ready(plain, 4)
        # Three of four fail their checks at once: the sidecars withdraw their keys.
        for i in (2, 3, 4):
            await fleet.deregister(f"b{i}")
        async with asyncio.timeout(10):
            while len(plain.pool.candidates()) != 1:
                await plain.pool.wait_changed()
        async with asyncio.timeout(10):
            while sum(e.withdrawn for e in ch.endpoints()) != 3:
                await ch.pool.wait_changed()
        assert len(ch.pool.candidates()) == 4  # 1 healthy of 4 known < 0.5: protect
        got = await _calls(ch, 400)
        assert spread_ok(got, {f"b{i}": 1 for i in (1, 2, 3, 4)}), got
        assert await _calls(plain, 40) == Counter({"b1": 40})
        # Two back of four: healthy share 0.5 is not below the threshold: normal picking.
        await fleet.register("b2")
        async with asyncio.timeout(10):
            while len(ch.pool.candidates()) != 2:
                await ch.pool.wait_changed()
        assert set(await _calls(ch, 48)) == {"b1", "b2"}


async def test_go_format_values_are_balanced_to(client: Client, fleet: Fleet) -> None:
    """Values as Go's endpoints.Manager writes them (Metadata null) sit beside meshkit's."""
    b1 = await fleet.add("b1", register=False)
    b2 = await fleet.add("b2")
    key = instance_key("meshkit/services", "web", b1.addr)
    await client.put(key, f'{{"Op":0,"Addr":"{b1.addr}","Metadata":null}}'.encode())
    async with Discovery(client, "web") as d:
        assert {i.addr for i in d.instances()} == {b1.addr, b2.addr}
        async with BalancedChannel(d, "web") as ch:
            await _ready(ch, 2)
            got = await _calls(ch, 200)
        assert got == Counter({"b1": 100, "b2": 100})
    assert encode_value(Instance("web", b2.addr, id="b2")).startswith(b'{"Op":0,"Addr":"')
